"""Policy ``lru``: evict the least recently used entry.

Recency is a per-slot *stamp* (int32, 4 bytes per slot; -1: not held): every
``inserted``/``hit`` call stamps its slots with the next value of a clock, so the
samples of one batch share a stamp (LRU at batch granularity; the order among them
is arbitrary). Victims come from a queue of the oldest entries: when it runs dry,
``np.argpartition`` picks the ``max(n, live / 8)`` smallest stamps and sorts them. A
queued entry whose stamp changed since (it was hit, or evicted and its slot reused) is
skipped; every other queued entry is still older than anything outside the queue,
because stamps only grow. So victims are exactly the least recently used entries, at
an amortised O(1) numpy cost each.

Under uniform random epochs LRU evicts exactly what the next epoch needs first, so its
hit ratio is about ``c + (1-c) ln(1-c)`` for a cache of fraction ``c``.
"""

from __future__ import annotations

import numpy as np

from .base import CachePolicy
from .codes import LOC_H

__all__ = ["LRUCache"]

_NONE = np.empty(0, np.int64)


class LRUCache(CachePolicy):
    """Admit every missed sample; evict the least recently used entry."""

    name = "lru"

    def __init__(self, config, capacity: int, n_samples: int) -> None:
        super().__init__(config, capacity, n_samples)
        self._stamp = np.full(capacity, -1, np.int32)
        self._clock = 0
        self._queue = _NONE       # slots, oldest first
        self._queued = _NONE      # their stamps when queued
        self._head = 0            # next queue position to consider

    def route(self, tier: np.ndarray) -> int:
        return LOC_H

    def admission_floor(self, pool: int) -> float:
        return -np.inf  # any miss may evict the least recently used entry

    def grow(self, capacity: int) -> None:
        extra = capacity - len(self._stamp)
        if extra > 0:
            self._stamp = np.concatenate([self._stamp, np.full(extra, -1, np.int32)])
        self.capacity = capacity

    def _tick(self) -> int:
        self._clock += 1
        return self._clock

    def inserted(self, slots, pool, importance, indices) -> None:
        self._stamp[slots] = self._tick()

    def hit(self, slots, importance, indices) -> None:
        held = slots[self._stamp[slots] >= 0]  # staging entries are not ours
        self._stamp[held] = self._tick()

    def removed(self, slots) -> None:
        self._stamp[slots] = -1

    def stamps(self) -> np.ndarray:
        """Stamp of every slot (-1: not held), for checks."""
        return self._stamp

    def victims(self, pool: int, importance: np.ndarray, n: int) -> np.ndarray:
        out, got, stamp = [], 0, self._stamp
        while got < n:
            if self._head >= len(self._queue) and not self._refill(n - got):
                break
            stop = min(len(self._queue), self._head + 2 * (n - got) + 32)
            cand = self._queue[self._head:stop]
            ok = (stamp[cand] == self._queued[self._head:stop]).nonzero()[0]
            if len(ok) > n - got:
                ok = ok[:n - got]
                stop = self._head + int(ok[-1]) + 1
            self._head = stop
            take = cand[ok]
            stamp[take] = -1  # committed: never handed out twice
            out.append(take)
            got += len(take)
        return np.concatenate(out) if out else _NONE

    def _refill(self, n: int) -> bool:
        live = (self._stamp >= 0).nonzero()[0]
        if not len(live):
            return False
        k = max(n, len(live) // 8, 64)
        if len(live) > k:
            live = live[np.argpartition(self._stamp[live], k - 1)[:k]]
        queue = live[self._stamp[live].argsort(kind="stable")]
        self._queue, self._queued, self._head = queue, self._stamp[queue], 0
        return True
