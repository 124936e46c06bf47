"""How the shared cache is laid out: block size from record sizes, H/L split per sampler.

The cache directory is pure bookkeeping (``impact_loader.cache``); the choices that need
to know both the data and the sampler are made here, where the dataset wires them.
"""

from __future__ import annotations

from typing import Any, Optional, Tuple

import numpy as np

__all__ = ["L_CACHE_BATCHES", "block_bytes_for", "cache_layout", "probe_sizes"]


def probe_sizes(source: Any, probes: int = 16) -> np.ndarray:
    """Byte sizes of up to ``probes`` records spread over ``source``."""
    n = len(source)
    idx = np.unique(np.linspace(0, n - 1, num=min(n, probes)).astype(np.int64))
    return np.array([len(r) for r in source.read_many(idx)], dtype=np.int64)


def block_bytes_for(sizes: np.ndarray) -> int:
    """Store block size from a few record sizes: one block per record when they agree.

    Fixed-size records (the common case) get a block that holds one record, so no byte
    of the cache is wasted on partly filled blocks; variable sizes get blocks of an
    eighth of the median, which bounds the waste to about 1/8 per record.
    """
    spread = sizes.max() / max(1, sizes.min())
    target = sizes.max() if spread <= 1.05 else np.median(sizes) / 8
    return int(max(64, -(-int(target) // 64) * 64))


#: Batches of L-tier samples the L-cache holds beside its packages (see cache_layout).
L_CACHE_BATCHES = 32


def cache_layout(cache_policy: str, cache_bytes: int, *, n_samples: int,
                 record_bytes: int, policy: Optional[str], h_share: Optional[float],
                 batch_size: int, package_size: int) -> Tuple[Optional[float], bool]:
    """How the cache should serve a sampler's plans: ``(h_fraction, tiers)``.

    * The cache holds the whole data set: tiers are ignored (``tiers=False``), so every
      sample is cached on its first read and never evicted or substituted, as MinIO
      would; the ``importance`` policy puts it all in one pool (``h_fraction=1``).
    * ``uniform`` plans rank nothing (``TIER_NONE``, routed to the H pool): all to H;
      with ``h_share=0`` every sample is L-tier (Quiver-style): all to L.
    * Ranked plans (``impact``, ``importance``, ``selective``): the L-cache only serves
      substitutes, and its content is renewed with packages (one sequential request per
      ``package_size`` samples) every epoch, so it needs room only for the L-tier samples
      of the batches in flight, :data:`L_CACHE_BATCHES` batches of
      ``(1 - h_share) * batch_size``, plus two packages; it never gets more than the
      sampler's L share ``1 - h_share``. Every other byte is H-cache, where a hit saves
      a random read.

    Args:
        cache_policy: the dataset's cache policy (only ``"importance"`` has a split).
        cache_bytes: bytes of the cache.
        n_samples: samples in the data set.
        record_bytes: bytes a record occupies in the store (whole blocks).
        policy: the sampler's selection policy name (None: unknown).
        h_share: the sampler's H-tier share (None: unknown).
        batch_size: samples per batch.
        package_size: samples per L-package.

    Returns:
        ``(h_fraction, tiers)``; ``h_fraction`` is None where the split does not matter
        or cannot be derived (keep the configured one).
    """
    if cache_bytes >= n_samples * record_bytes:
        return (1.0 if cache_policy == "importance" else None), False
    if cache_policy != "importance" or h_share is None:
        return None, True
    if h_share == 0:
        return 0.0, True
    if policy == "uniform":
        return 1.0, True
    l_need = (L_CACHE_BATCHES * (1 - h_share) * batch_size + 2 * package_size) * record_bytes
    l_share = min(1 - h_share, l_need / cache_bytes)
    return round(1 - l_share, 4), True
