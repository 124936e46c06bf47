"""The loaders impact-bench compares, by name: what each one is and how it is built.

Every cached loader shares impact-loader's prefetcher and store, so the comparison is
between strategies (what is selected, what is cached, what is substituted), not between
I/O engines: a strong baseline, not a straw man.

=================  ==========================================================================
``plain``          ``torch.utils.data.DataLoader`` + ``RandomSampler``, no cache: each worker
                   reads one sample per request (what most training scripts do today).
``lru``            uniform epochs, LRU cache.
``minio``          uniform epochs, MinIO cache (CoorDL): admit until full, never evict; the
                   best a cache can do under uniform random access (hit ratio = cache share).
``quiver``         uniform epochs with substitution (Quiver): every sample counts as
                   low-importance, the whole cache is an L-cache of packages, and a missed
                   sample is answered by a cached one not yet used this epoch.
``is-lru``         importance sampling + LRU: the baseline iCache reports against.
``impact``         impact-loader's defaults: ``policy="impact"``, ``cache_policy="importance"``.
``impact-threads`` the same with ``cache_service=False``: directory, annotator and reads
                   in threads of the training process instead of the cache service
                   process (the default before session 11; for A/B comparisons).
=================  ==========================================================================
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional

__all__ = ["LoaderSpec", "LOADERS", "parse_loaders"]


@dataclass(frozen=True)
class LoaderSpec:
    """One loader of the comparison.

    Attributes:
        name: the name used on the command line and in reports.
        policy: selection policy of the :class:`ImportanceSampler`; ``None`` for the
            plain DataLoader baseline.
        cache_policy: cache policy of the :class:`ImpactDataset`.
        sampler_options: extra :class:`SamplingConfig` options.
        cache_options: extra :class:`CacheConfig` options.
        description: one line for tables and ``--help``.
    """

    name: str
    policy: Optional[str]
    cache_policy: Optional[str]
    description: str
    sampler_options: Dict[str, Any] = field(default_factory=dict)
    cache_options: Dict[str, Any] = field(default_factory=dict)

    @property
    def learns(self) -> bool:
        """Whether the loader's sampler uses the reported losses."""
        return self.policy not in (None, "uniform")


LOADERS: Dict[str, LoaderSpec] = {s.name: s for s in (
    LoaderSpec("plain", None, None, "PyTorch DataLoader + RandomSampler, no cache"),
    LoaderSpec("lru", "uniform", "lru", "uniform epochs, LRU cache"),
    LoaderSpec("minio", "uniform", "minio", "uniform epochs, MinIO cache (CoorDL)"),
    LoaderSpec("quiver", "uniform", "importance",
               "uniform epochs, substitution among cached samples (Quiver)",
               sampler_options={"h_share": 0.0}, cache_options={"h_fraction": 0.0}),
    LoaderSpec("is-lru", "importance", "lru",
               "importance sampling + LRU cache (iCache's baseline)"),
    LoaderSpec("impact", "impact", "importance", "impact-loader defaults"),
    LoaderSpec("impact-threads", "impact", "importance",
               "impact-loader defaults, cache in threads of the training process",
               cache_options={"cache_service": False}),
)}


def parse_loaders(text: str) -> List[str]:
    """``"plain,impact"`` -> ``["plain", "impact"]``; ``"all"`` -> every loader.

    Raises:
        ValueError: an unknown or repeated name, or none at all.
    """
    if text.strip() == "all":
        return list(LOADERS)
    names = [n.strip() for n in text.split(",") if n.strip()]
    unknown = [n for n in names if n not in LOADERS]
    if unknown or not names:
        raise ValueError(f"loaders {text!r}: unknown {unknown or 'none given'}; choose a "
                         f"comma-separated subset of {','.join(LOADERS)} or 'all'")
    if len(set(names)) != len(names):
        raise ValueError(f"loaders {text!r} names a loader twice")
    return names
