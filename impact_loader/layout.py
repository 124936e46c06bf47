"""How the shared cache is laid out: block size from record sizes, H/L split per sampler.

The cache directory is pure bookkeeping (``impact_loader.cache``); the choices that need
to know both the data and the sampler are made here, where the dataset wires them.
"""

from __future__ import annotations

from typing import Any, Optional, Tuple

import numpy as np

__all__ = ["L_CACHE_BATCHES", "MAX_L_SHARE", "block_bytes_for", "cache_layout",
           "probe_sizes"]


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

#: Most of a ranked plan's cache the L-cache may take: the H-cache keeps at least the
#: rest, so the most important samples of each epoch are still trained for real.
MAX_L_SHARE = 0.7


def cache_layout(cache_policy: str, cache_bytes: int, *, n_samples: int,
                 record_bytes: int, policy: Optional[str], h_share: Optional[float],
                 batch_size: int, package_size: int,
                 planned_share: float = 1.0) -> Tuple[Optional[float], bool]:
    """How the cache should serve a sampler's plans: ``(h_fraction, tiers)``.

    * The cache holds the whole data set: tiers are ignored (``tiers=False``), so every
      sample is cached on its first read and never evicted or substituted, as MinIO
      would; the ``importance`` policy puts it all in one pool (``h_fraction=1``).
    * ``uniform`` plans rank nothing (``TIER_NONE``, routed to the H pool): all to H;
      with ``h_share=0`` every sample is L-tier (Quiver-style): all to L.
    * Ranked plans (``impact``, ``importance``, ``selective``): the L-cache serves
      substitutes, renewed with packages (one sequential request per ``package_size``
      samples). A substitute stays pinned until its batch is consumed, so the L-cache
      needs room for the L-tier samples of :data:`L_CACHE_BATCHES` batches plus two
      packages; without that room a package cannot load and an L-tier miss becomes a
      random read. The L-tier share of a batch is not just ``1 - h_share``: the
      pipeline marks H-tier at most as many samples per epoch as the H-cache holds
      (``cap_h_tier``), so a smaller H-cache means more L-tier samples. The split is the
      largest H-cache whose L-cache still has that room, with at most
      :data:`MAX_L_SHARE` of the cache going to L. Every other byte is H-cache, where
      a hit saves a random read.

    Args:
        cache_policy: the dataset's cache policy (only ``"importance"`` has a split).
        cache_bytes: bytes of the cache.
        n_samples: samples in the data set.
        record_bytes: bytes a record occupies in the store (whole blocks).
        policy: the sampler's selection policy name (None: unknown).
        h_share: the sampler's H-tier share (None: unknown).
        batch_size: samples per batch.
        package_size: samples per L-package.
        planned_share: samples planned per epoch, as a share of ``n_samples`` (the
            ``impact`` policy's ``trained_fraction`` in its selection epochs).

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
    records = cache_bytes / record_bytes
    planned = max(1.0, planned_share * n_samples)
    h = np.linspace(1.0 - MAX_L_SHARE, 1.0, 1001)  # candidate H shares of the cache
    h_tier = np.minimum(h_share * planned, h * records) / planned  # after cap_h_tier
    l_need = L_CACHE_BATCHES * (1.0 - h_tier) * batch_size + 2 * package_size
    fits = (1.0 - h) * records >= l_need
    return round(float(h[fits].max() if fits.any() else h[0]), 4), True
