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

__all__ = ["LazyMinHeap", "order_bits", "order_bits_array", "from_order_bits"]

_SMALL = 4  # batch calls with at most this many items loop over the scalar methods
_F = struct.Struct("<f")
_I = struct.Struct("<I")


def order_bits(key: float) -> int:
    """Map a float32 key to a uint32 whose unsigned order matches the key order (> 0)."""
    if key != key:
        raise ValueError(f"importance={key!r} is NaN; pass a finite number")
    b = _I.unpack(_F.pack(key))[0]
    return (~b & 0xFFFFFFFF) if b & 0x80000000 else (b | 0x80000000)


def order_bits_array(keys) -> np.ndarray:
    """Vectorized :func:`order_bits` (uint32 array)."""
    k = np.asarray(keys, np.float32)
    if np.isnan(k).any():
        raise ValueError("importance contains NaN; pass finite numbers")
    b = k.view(np.uint32)
    return np.where(b & 0x80000000, ~b, b | 0x80000000).astype(np.uint32)


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

    def push_many(self, items: np.ndarray, keys) -> None:
        """:meth:`push` for arrays (the last key wins for a repeated item).

        Few new entries are sifted up one by one; many (more than an eighth of the
        heap) are merged by one rebuild, which sorts the live entries in C.
        """
        if len(items) <= _SMALL:  # scalar pushes beat a dozen numpy calls
            for item, key in zip(np.asarray(items).tolist(), np.asarray(keys).tolist()):
                self.push(item, key)
            return
        items = np.asarray(items, np.int64)
        ob = order_bits_array(keys)
        cur = np.frombuffer(self._cur, np.uint32)
        before = cur[items]
        cur[items] = ob  # fancy assignment: the last occurrence of an item wins
        final = cur[items]
        win = (final != before) & (ob == final)  # changed, and the winning occurrence
        if not np.count_nonzero(win):
            return
        items, ob, before = items[win], ob[win], before[win]
        if len(items) > 1:  # an item repeated with the same winning key: once
            order = items.argsort(kind="stable")
            s = items[order]
            keep = order[np.concatenate(([True], s[1:] != s[:-1]))]
            items, ob, before = items[keep], ob[keep], before[keep]
        self._live += int(np.count_nonzero(before == 0))
        del cur  # a live view would pin the array's buffer (grow() extends it)
        if len(items) > max(64, len(self._heap) >> 3):
            self.rebuild()
            return
        sift = self._sift_up
        for e in ((ob.astype(np.uint64) << np.uint64(32)) | items.astype(np.uint64)).tolist():
            sift(e)
        self._maybe_rebuild()

    def remove_many(self, items: np.ndarray) -> None:
        """:meth:`remove` for arrays (absent items are skipped)."""
        if len(items) <= _SMALL:
            for item in np.asarray(items).tolist():
                self.remove(item)
            return
        cur = np.frombuffer(self._cur, np.uint32)
        items = np.asarray(items, np.int64)
        items = np.sort(items[cur[items] != 0])
        if len(items):
            cur[items] = 0
            self._live -= 1 + int(np.count_nonzero(items[1:] != items[:-1]))
        del cur
        self._maybe_rebuild()

    def contains(self, items: np.ndarray) -> np.ndarray:
        """Bool mask: which ``items`` are present."""
        return np.frombuffer(self._cur, np.uint32)[items] != 0

    def grow(self, capacity: int) -> None:
        """Allow item ids up to ``capacity - 1``."""
        if capacity > self.capacity:
            self._cur.frombytes(bytes(4 * (capacity - self.capacity)))
            self.capacity = int(capacity)

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
        for item in (np.frombuffer(self._cur, np.uint32)).nonzero()[0].tolist():
            yield item, from_order_bits(self._cur[item])

    def copy(self) -> "LazyMinHeap":
        """An independent copy (O(entries), C-speed array copies)."""
        other = LazyMinHeap.__new__(LazyMinHeap)
        other.capacity = self.capacity
        other._heap = array("Q", self._heap)
        other._cur = array("I", self._cur)
        other._live = self._live
        return other

    def compact(self) -> None:
        """Drop every dead entry in O(entries log entries), in numpy: the live entries,
        sorted, form a valid heap.

        Runs at every epoch boundary on ~k entries: no Python object per entry (a
        list of k ints would cost pymalloc arenas that stay mapped).
        """
        h = np.frombuffer(self._heap, np.uint64)
        items = (h & np.uint64(0xFFFFFFFF)).view(np.int64)
        live = np.frombuffer(self._cur, np.uint32)[items] == (h >> np.uint64(32))
        del items
        if np.count_nonzero(live) == len(live):
            return
        entries = h[live]
        del h, live  # h views the old entries (released with the old array)
        entries.sort()
        self._heap = _heap_array(entries)

    def rebuild(self) -> None:
        """Drop every dead entry: the live entries, sorted, form a valid heap."""
        cur = np.frombuffer(self._cur, np.uint32)
        items = cur.nonzero()[0]
        entries = cur[items].astype(np.uint64)
        del cur  # a live view would pin ``_cur`` (grow() extends it)
        entries <<= np.uint64(32)
        entries |= items.view(np.uint64)  # item ids are >= 0
        del items
        entries.sort()
        self._heap = _heap_array(entries)

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


def _heap_array(entries: np.ndarray) -> array:
    """``array('Q')`` holding the uint64 ``entries`` (one copy, no bytes in between)."""
    out = array("Q")
    out.frombytes(memoryview(entries).cast("B"))
    return out
