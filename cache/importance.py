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
"""

from __future__ import annotations

from array import array
from typing import List, Optional, Tuple

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
        # Epoch (mod 2**15) each sample was last delivered from the L-cache: a sample
        # is a substitute at most once per epoch, even if its package is evicted and
        # loaded again (2 bytes per dataset sample).
        self._l_seen = array("h", [-1]) * n_samples

    def pools(self) -> List[Tuple[int, int]]:
        return [(LOC_H, self.config.h_bytes), (LOC_L, self.config.l_bytes)]

    def route(self, tier: int) -> int:
        return LOC_SOURCE if tier == TIER_L else LOC_H

    def victim(self, pool: int, importance: float) -> int:
        if pool == LOC_L:
            return self.l.victim()
        slot, low = self.h.minimum()
        return slot if slot >= 0 and importance > low else -1

    def substitute(self, index: int, tier: int) -> int:
        if tier != TIER_L or not self.config.substitution:
            return -1
        return self.l.take_substitute()  # the directory then reports hit()

    def package(self, index: int, tier: int) -> Optional[Tuple[int, int]]:
        if tier != TIER_L or self.config.l_bytes == 0:
            return None
        k = self.config.package_size
        if self.config.substitution and self.l.unused >= k:
            return None
        start = index - index % k
        return start, min(start + k, self.n_samples)

    def inserted(self, slot: int, pool: int, importance: float, index: int) -> None:
        if pool == LOC_L:
            self.l.add(slot, used=self._l_seen[index] == self.l.epoch)
        else:
            self.h.insert(slot, importance)

    def hit(self, slot: int, importance: float, index: int) -> None:
        if slot in self.l:
            self.l.use(slot)
            self._l_seen[index] = self.l.epoch
        elif importance == importance:  # NaN: importance unknown, keep the old one
            self.h.update(slot, importance)

    def removed(self, slot: int) -> None:
        if slot in self.l:
            self.l.remove(slot)
        else:
            self.h.remove(slot)

    def update(self, slot: int, importance: float) -> None:
        self.h.update(slot, importance)

    def new_epoch(self) -> None:
        self.h.swap()
        self.l.new_epoch()
