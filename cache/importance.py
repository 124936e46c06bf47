"""Policy ``importance``: the H/L design (iCache, ImPACT).

``cache_bytes`` is split into an H pool (``h_fraction``) and an L pool (the rest).

* TIER_H (and TIER_NONE) samples go to the H-cache (``hcache.py``): a miss is admitted
  only if its importance is higher than the cached minimum, which is evicted; while
  the pool has room every miss is admitted. Importance updates during an epoch go to
  the shadow heap, swapped in by :meth:`new_epoch`. A uniform plan (all TIER_NONE,
  equal importance) therefore behaves like ``minio`` on the H share only: the L share
  is filled by L-samples alone, so prefer ``minio`` for purely uniform training.
* TIER_L samples are served by the L-cache (``lcache.py``): a cached L-sample is a hit;
  a missed one is answered by a substitute (cached, not yet used this epoch) when
  ``substitution`` is on. When fewer than ``package_size`` substitutes are left (or on
  every miss with substitution off) the package holding the missed index,
  ``[index - index % package_size, ... + package_size)``, is loaded into the L pool.

The directory works a batch at a time: within a batch, H misses claim room in
descending importance (:meth:`admit_order`), and a full H pool drops every miss not
above its minimum in one comparison (:meth:`admission_floor`) before the heap is
popped for the rest (:meth:`victims`).
"""

from __future__ import annotations

from typing import List, Optional, Tuple

import numpy as np

from .base import CachePolicy
from .codes import LOC_H, LOC_L, LOC_SOURCE, TIER_L
from .hcache import HCache
from .lcache import LCache

__all__ = ["ImportanceCache"]


class ImportanceCache(CachePolicy):
    """H-cache by importance min-heap, L-cache by packages and substitution."""

    name = "importance"

    def __init__(self, config, capacity: int, n_samples: int) -> None:
        super().__init__(config, capacity, n_samples)
        self.h = HCache(capacity)
        self.l = LCache(capacity)
        self.has_l_cache = config.l_bytes > 0
        # Epoch (mod 2**15) each sample was last delivered from the L-cache: a sample
        # is a substitute at most once per epoch, even if its package is evicted and
        # loaded again (2 bytes per dataset sample).
        self._l_seen = np.full(n_samples, -1, np.int16)

    def pools(self) -> List[Tuple[int, int]]:
        return [(LOC_H, self.config.h_bytes), (LOC_L, self.config.l_bytes)]

    def route(self, tier: np.ndarray) -> np.ndarray:
        return np.where(tier == TIER_L, LOC_SOURCE, LOC_H).astype(np.int8)

    def admit_order(self, pool: int, importance: np.ndarray) -> Optional[np.ndarray]:
        if pool == LOC_L or len(importance) < 2:
            return None  # packages load in index order
        # The most important misses claim the room first (stable: ties keep plan order).
        return (-importance).argsort(kind="stable")

    def admission_floor(self, pool: int) -> float:
        if pool == LOC_L:
            return -np.inf
        return self.h.minimum()[1] if len(self.h) else -np.inf

    def victims(self, pool: int, importance: np.ndarray, n: int) -> np.ndarray:
        if pool == LOC_L:
            return self.l.victims(n)
        return self.h.pop_below(importance[:n])

    def grow(self, capacity: int) -> None:
        self.h.grow(capacity)
        self.l.grow(capacity)
        self.capacity = capacity

    def substitutable(self, tier: np.ndarray) -> np.ndarray:
        if not self.config.substitution:
            return np.zeros(len(tier), bool)
        return tier == TIER_L

    def substitutes_left(self) -> int:
        return self.l.unused if self.config.substitution else 0

    def refill_below(self) -> int:
        return self.config.package_size

    def take_substitutes(self, n: int) -> np.ndarray:
        return self.l.take_substitutes(n)  # the directory then reports hit()

    def package(self, index: int, tier: int) -> Optional[Tuple[int, int]]:
        if tier != TIER_L or self.config.l_bytes == 0:
            return None
        k = self.config.package_size
        if self.config.substitution and self.l.unused >= k:
            return None
        start = index - index % k
        return start, min(start + k, self.n_samples)

    def inserted(self, slots, pool, importance, indices) -> None:
        if pool == LOC_L:
            self.l.add(slots, self._l_seen[indices] == self.l.epoch)
        else:
            self.h.insert_many(slots, importance)

    def hit(self, slots, importance, indices) -> None:
        in_l = self.l.contains(slots)
        n_l = np.count_nonzero(in_l)
        if n_l:
            if n_l == len(slots):  # substitutes and package entries: L only
                self.l.use(slots)
                self._l_seen[indices] = self.l.epoch
                return
            self.l.use(slots[in_l])
            self._l_seen[indices[in_l]] = self.l.epoch
            slots, importance = slots[~in_l], importance[~in_l]
        known = importance == importance  # NaN: importance unknown, keep the old one
        if np.count_nonzero(known) < len(known):
            slots, importance = slots[known], importance[known]
        if len(slots):
            self.h.update_many(slots, importance)

    def removed(self, slots) -> None:
        in_l = self.l.contains(slots)
        self.l.remove(slots[in_l])
        self.h.remove_many(slots[~in_l])

    def update(self, slots, importance) -> None:
        self.h.update_many(slots, importance)

    def new_epoch(self) -> None:
        self.h.swap()
        self.l.new_epoch()
