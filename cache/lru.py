"""Policy ``lru``: evict the least recently used entry.

Recency is a doubly linked list over store slots held in two ``array('i')`` (8 bytes per
slot): ``hit`` and ``inserted`` move a slot to the head, ``victim`` names the tail.
Under uniform random epochs LRU evicts exactly what the next epoch needs first, so its
hit ratio is about ``c + (1-c) ln(1-c)`` for a cache of fraction ``c``.
"""

from __future__ import annotations

from array import array

from .base import CachePolicy
from .codes import LOC_H

__all__ = ["LRUCache"]


class LRUCache(CachePolicy):
    """Admit every missed sample; evict the least recently used entry."""

    name = "lru"

    def __init__(self, config, capacity: int, n_samples: int) -> None:
        super().__init__(config, capacity, n_samples)
        # Slot ``capacity`` is the list's sentinel.
        self._prev = array("i", [-1]) * (capacity + 1)
        self._next = array("i", [-1]) * (capacity + 1)
        self._prev[capacity] = self._next[capacity] = capacity

    def route(self, tier: int) -> int:
        return LOC_H

    def _unlink(self, slot: int) -> None:
        p, n = self._prev[slot], self._next[slot]
        if p < 0:
            return
        self._next[p] = n
        self._prev[n] = p
        self._prev[slot] = self._next[slot] = -1

    def _push_front(self, slot: int) -> None:
        head = self.capacity
        first = self._next[head]
        self._prev[slot] = head
        self._next[slot] = first
        self._prev[first] = slot
        self._next[head] = slot

    def inserted(self, slot: int, pool: int, importance: float, index: int) -> None:
        self._unlink(slot)
        self._push_front(slot)

    def hit(self, slot: int, importance: float, index: int) -> None:
        if self._next[self.capacity] != slot:
            self._unlink(slot)
            self._push_front(slot)

    def removed(self, slot: int) -> None:
        self._unlink(slot)

    def victim(self, pool: int, importance: float) -> int:
        tail = self._prev[self.capacity]
        return -1 if tail == self.capacity else tail
