"""CachePolicy: the small interface every cache policy implements.

The cache directory (``directory.py``) owns the store, the index<->slot maps and the
byte accounting; a policy only answers questions:

* :meth:`pools` -- which pools the store has and their byte budgets;
* :meth:`route` -- into which pool a missed sample of a tier would be admitted
  (``LOC_SOURCE``: never);
* :meth:`victim` -- **the eviction hook**: which entry of a pool goes to make room for
  an incoming sample of a given importance (-1: none, do not admit);
* :meth:`substitute` / :meth:`package` -- L-cache behaviour (default: none);
* notifications :meth:`inserted`, :meth:`hit`, :meth:`removed`, :meth:`update`,
  :meth:`new_epoch` to keep the policy's own order (LRU list, heaps) current.

Entries are identified by store slot (``0 .. capacity-1``), so a policy keeps its state
in flat arrays indexed by slot. All calls happen in the owning (main) process.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, List, Optional, Tuple

from .codes import LOC_H, LOC_SOURCE

if TYPE_CHECKING:  # pragma: no cover
    from .config import CacheConfig

__all__ = ["CachePolicy"]


class CachePolicy:
    """Base policy: one pool holding all of ``cache_bytes``, no eviction, no admission.

    Args:
        config: the cache configuration.
        capacity: number of store slots (entry ids are ``0 .. capacity-1``).
        n_samples: samples in the dataset (indices are ``0 .. n_samples-1``).
    """

    name = "base"

    def __init__(self, config: "CacheConfig", capacity: int, n_samples: int) -> None:
        self.config = config
        self.capacity = capacity
        self.n_samples = n_samples

    def pools(self) -> List[Tuple[int, int]]:
        """``(pool, bytes)`` budgets of the cache (staging is added by the directory)."""
        return [(LOC_H, self.config.cache_bytes)]

    def route(self, tier: int) -> int:
        """Pool a missed sample of ``tier`` is admitted to, or ``LOC_SOURCE``."""
        return LOC_SOURCE

    def victim(self, pool: int, importance: float) -> int:
        """Entry of ``pool`` to evict for a sample of ``importance``; -1 to refuse."""
        return -1

    def substitute(self, index: int, tier: int) -> int:
        """Cached entry to deliver instead of missed ``index``; -1 for none."""
        return -1

    def package(self, index: int, tier: int) -> Optional[Tuple[int, int]]:
        """Index run ``(start, stop)`` to load into the L pool for a miss, or None."""
        return None

    def inserted(self, slot: int, pool: int, importance: float, index: int) -> None:
        """``slot`` now holds (or awaits) sample ``index`` of ``importance``."""

    def hit(self, slot: int, importance: float, index: int) -> None:
        """The plan delivers sample ``index`` from ``slot`` (also after a substitution);
        ``importance`` is NaN if unknown."""

    def removed(self, slot: int) -> None:
        """``slot`` was evicted or abandoned."""

    def update(self, slot: int, importance: float) -> None:
        """New importance for the cached sample in ``slot`` (outside a plan)."""

    def new_epoch(self) -> None:
        """Epoch boundary."""
