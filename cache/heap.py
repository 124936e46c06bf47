"""LazyMinHeap: a min-heap of integer items keyed by float32 importance, lazy deletion.

Each heap entry is one unsigned 64-bit integer, ``order_bits(key) << 32 | item``, kept
in an ``array('Q')`` (8 bytes per entry, no per-entry Python object); comparing two
entries compares keys first, items second. The item's current key lives in a per-item
``array('I')`` of order bits (0 = absent). Re-keying or removing an item does not search
the heap: it pushes a new entry (or nothing) and the old entry becomes *dead* because
its key no longer matches the item's current one. Dead entries are dropped when they
reach the top, and the heap is rebuilt from the live items when dead entries outnumber
live ones, so it holds at most ``2 * live + 1`` entries.

Keys are stored as float32: importance needs no more precision, and it keeps an entry
in one machine word. NaN keys are rejected.
"""

from __future__ import annotations

import math
import struct
from array import array
from typing import Iterator, Tuple

import numpy as np

__all__ = ["LazyMinHeap", "order_bits", "from_order_bits"]

_F = struct.Struct("<f")
_I = struct.Struct("<I")


def order_bits(key: float) -> int:
    """Map a float32 key to a uint32 whose unsigned order matches the key order (> 0)."""
    if key != key:
        raise ValueError(f"importance={key!r} is NaN; pass a finite number")
    b = _I.unpack(_F.pack(key))[0]
    return (~b & 0xFFFFFFFF) if b & 0x80000000 else (b | 0x80000000)


def from_order_bits(ob: int) -> float:
    """Inverse of :func:`order_bits`."""
    b = (ob & 0x7FFFFFFF) if ob & 0x80000000 else (~ob & 0xFFFFFFFF)
    return _F.unpack(_I.pack(b))[0]


class LazyMinHeap:
    """Min-heap over items ``0 .. capacity-1``, each present at most once.

    Args:
        capacity: number of distinct item ids (e.g. store slots).
    """

    __slots__ = ("capacity", "_heap", "_cur", "_live")

    def __init__(self, capacity: int) -> None:
        self.capacity = int(capacity)
        self._heap = array("Q")
        self._cur = array("I", bytes(4 * self.capacity))
        self._live = 0

    def __len__(self) -> int:
        return self._live

    def __contains__(self, item: int) -> bool:
        return self._cur[item] != 0

    @property
    def entries(self) -> int:
        """Heap entries, live and dead (memory use is 8 bytes each)."""
        return len(self._heap)

    def key(self, item: int) -> float:
        """Current key of ``item`` (float32 value); KeyError if absent."""
        ob = self._cur[item]
        if not ob:
            raise KeyError(item)
        return from_order_bits(ob)

    def push(self, item: int, key: float) -> None:
        """Insert ``item`` with ``key``, or re-key it if present."""
        ob = order_bits(key)
        cur = self._cur
        old = cur[item]
        if old == ob:
            return
        if not old:
            self._live += 1
        cur[item] = ob
        self._sift_up(ob << 32 | item)
        self._maybe_rebuild()

    def remove(self, item: int) -> bool:
        """Remove ``item`` if present (its heap entry dies lazily); return whether it was."""
        if not self._cur[item]:
            return False
        self._cur[item] = 0
        self._live -= 1
        self._maybe_rebuild()
        return True

    def peek(self) -> Tuple[int, float]:
        """``(item, key)`` of the minimum, or ``(-1, inf)`` when empty."""
        heap, cur = self._heap, self._cur
        while heap:
            e = heap[0]
            item = e & 0xFFFFFFFF
            if cur[item] == e >> 32:
                return item, from_order_bits(e >> 32)
            self._pop_top()
        return -1, math.inf

    def pop(self) -> Tuple[int, float]:
        """Remove and return ``(item, key)`` of the minimum; ``(-1, inf)`` when empty."""
        item, key = self.peek()
        if item >= 0:
            self._cur[item] = 0
            self._live -= 1
            self._pop_top()
            self._maybe_rebuild()
        return item, key

    def items(self) -> Iterator[Tuple[int, float]]:
        """Live ``(item, key)`` pairs in item order."""
        for item in np.flatnonzero(np.frombuffer(self._cur, np.uint32)).tolist():
            yield item, from_order_bits(self._cur[item])

    def copy(self) -> "LazyMinHeap":
        """An independent copy (O(entries), C-speed array copies)."""
        other = LazyMinHeap.__new__(LazyMinHeap)
        other.capacity = self.capacity
        other._heap = array("Q", self._heap)
        other._cur = array("I", self._cur)
        other._live = self._live
        return other

    def rebuild(self) -> None:
        """Drop every dead entry: the live entries, sorted, form a valid heap."""
        cur = np.frombuffer(self._cur, np.uint32)
        items = np.flatnonzero(cur).astype(np.uint64)
        entries = np.sort((cur[items.astype(np.int64)].astype(np.uint64) << np.uint64(32))
                          | items)
        self._heap = array("Q", entries.tobytes())

    # ---------------------------------------------------------------- internals
    def _maybe_rebuild(self) -> None:
        if len(self._heap) - self._live > self._live + 64:
            self.rebuild()

    def _sift_up(self, e: int) -> None:
        heap = self._heap
        heap.append(e)
        i = len(heap) - 1
        while i:
            parent = (i - 1) >> 1
            p = heap[parent]
            if p <= e:
                break
            heap[i] = p
            i = parent
        heap[i] = e

    def _pop_top(self) -> None:
        heap = self._heap
        last = heap.pop()
        n = len(heap)
        if not n:
            return
        i = 0
        child = 1
        while child < n:
            c = heap[child]
            right = child + 1
            if right < n:
                r = heap[right]
                if r < c:
                    child, c = right, r
            if last <= c:
                break
            heap[i] = c
            i = child
            child = 2 * i + 1
        heap[i] = last
