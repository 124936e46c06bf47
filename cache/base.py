"""CachePolicy: the small interface every cache policy implements.

The cache directory (``directory.py``) owns the store, the index<->slot maps and the
byte accounting; a policy only answers questions, one *batch* at a time (numpy arrays
in, numpy arrays out, so bookkeeping costs no Python loop per sample):

* :meth:`pools` -- which pools the store has and their byte budgets;
* :meth:`route` -- into which pool each missed sample of a batch would be admitted
  (``LOC_SOURCE``: never);
* :meth:`admit_order` -- in which order a batch's misses compete for room;
* :meth:`victims` -- **the eviction hook**: which entries of a pool go, in eviction
  order, to make room for incoming samples (fewer, or none, to refuse);
  :meth:`admission_floor` lets the directory skip hopeless misses in one comparison;
* L-cache hooks (default: none) -- :meth:`substitutable`, :meth:`substitutes_left`,
  :meth:`refill_below`, :meth:`take_substitutes`, :meth:`package`;
* notifications :meth:`inserted`, :meth:`hit`, :meth:`removed`, :meth:`update`,
  :meth:`grow`, :meth:`new_epoch` to keep the policy's own order (LRU stamps, heaps)
  current.

Entries are identified by store slot (``0 .. capacity-1``, the capacity grows with
:meth:`grow`), so a policy keeps its state in flat arrays indexed by slot. Slot
arguments are int64 arrays and may name slots the policy does not hold (staging
entries); a policy ignores those. All calls happen in the owning (main) process.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, List, Optional, Tuple

import numpy as np

from .codes import LOC_H, LOC_SOURCE

if TYPE_CHECKING:  # pragma: no cover
    from .config import CacheConfig

__all__ = ["CachePolicy"]

_NONE = np.empty(0, np.int64)


class CachePolicy:
    """Base policy: one pool holding all of ``cache_bytes``, no eviction, no admission.

    Args:
        config: the cache configuration.
        capacity: number of store slots to start with (entry ids ``0 .. capacity-1``).
        n_samples: samples in the dataset (indices are ``0 .. n_samples-1``).
    """

    name = "base"
    #: Whether the directory must call the L-cache hooks (substitutes, packages).
    has_l_cache = False

    def __init__(self, config: "CacheConfig", capacity: int, n_samples: int) -> None:
        self.config = config
        self.capacity = capacity
        self.n_samples = n_samples

    def pools(self) -> List[Tuple[int, int]]:
        """``(pool, bytes)`` budgets of the cache (staging is added by the directory)."""
        return [(LOC_H, self.config.cache_bytes)]

    def route(self, tier: np.ndarray):
        """Pool each missed sample of tier ``tier[i]`` goes to (``LOC_SOURCE``: none):
        an int8 array, or one int when it is the same for every tier."""
        return LOC_SOURCE

    def admit_order(self, pool: int, importance: np.ndarray) -> Optional[np.ndarray]:
        """Order in which misses of ``importance`` claim room in ``pool``; None: plan
        order."""
        return None

    def victims(self, pool: int, importance: np.ndarray, n: int) -> np.ndarray:
        """Up to ``n`` entries of ``pool`` to evict, in eviction order.

        The ``i``-th victim makes room for an incoming sample of ``importance[i]``
        (sorted as :meth:`admit_order` sorted the misses). The victims are committed:
        the policy drops them from its own order before returning them, and the
        directory evicts every one (without calling :meth:`removed`). Empty: refuse.
        """
        return _NONE

    def admission_floor(self, pool: int) -> float:
        """Importance a miss must exceed to evict anything from full ``pool``.

        A shortcut, not a decision: :meth:`victims` still decides. Default ``inf``
        (this policy never evicts).
        """
        return np.inf

    def grow(self, capacity: int) -> None:
        """The store now has ``capacity`` slots: extend per-slot arrays."""
        self.capacity = capacity

    # ------------------------------------------------------------------ L-cache
    def substitutable(self, tier: np.ndarray) -> np.ndarray:
        """Bool mask: misses of these tiers may be answered by a substitute."""
        return np.zeros(len(tier), bool)

    def substitutes_left(self) -> int:
        """Cached entries not yet used this epoch (0 when nothing is substituted)."""
        return 0

    def refill_below(self) -> int:
        """A package load is due when :meth:`substitutes_left` drops below this."""
        return 0

    def take_substitutes(self, n: int) -> np.ndarray:
        """Up to ``n`` cached entries to deliver instead of misses (marked used)."""
        return _NONE

    def package(self, index: int, tier: int) -> Optional[Tuple[int, int]]:
        """Index run ``(start, stop)`` to load into the L pool for a miss, or None."""
        return None

    # ------------------------------------------------------------ notifications
    def inserted(self, slots: np.ndarray, pool: int, importance: np.ndarray,
                 indices: np.ndarray) -> None:
        """``slots`` now hold (or await) samples ``indices`` of ``importance``."""

    def hit(self, slots: np.ndarray, importance: np.ndarray, indices: np.ndarray) -> None:
        """The plan delivers samples ``indices`` from ``slots`` (also after a
        substitution); ``importance`` is NaN where unknown."""

    def removed(self, slots: np.ndarray) -> None:
        """``slots`` were evicted or abandoned."""

    def update(self, slots: np.ndarray, importance: np.ndarray) -> None:
        """New importance for the cached samples in ``slots`` (outside a plan)."""

    def new_epoch(self) -> None:
        """Epoch boundary."""
