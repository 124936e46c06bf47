"""HCache: the importance min-heap over cached H-samples, with a shadow heap.

The *active* heap orders the cached H entries (store slots) by the importance they had
when the epoch started; admission compares a missed H-sample with its minimum. During
the epoch, importance updates go only to the *shadow* heap, so the admission order
stays stable while the sampler keeps learning. Admissions and evictions go to both.
At the epoch boundary :meth:`swap` drops the shadow's dead entries (a numpy sort of
its k entries, O(k log k) at C speed), makes it the active heap (a reference swap) and
re-seeds a fresh shadow as a copy of it (O(k) C-speed array copies).
Neither heap is ever touched by DataLoader workers, so a swap blocks no reader.

Memory per cached H entry: two float32 keys (8 bytes) plus one 8-byte entry in each
heap (16 bytes), with transient dead entries until a heap rebuild (see ``heap.py``).

The directory calls the batch forms (``*_many``, :meth:`pop_below`): keys of a whole
batch are converted and compared in numpy, and only entries whose key really changed
are pushed; evictions pop the heap one minimum at a time, since each pop decides
whether the next incoming sample is admitted at all.
"""

from __future__ import annotations

from typing import Tuple

import numpy as np

from .heap import LazyMinHeap

__all__ = ["HCache"]


class HCache:
    """Admission/eviction order of the H-cache.

    Args:
        capacity: number of item ids (store slots) that may ever be cached.
    """

    __slots__ = ("active", "shadow")

    def __init__(self, capacity: int) -> None:
        self.active = LazyMinHeap(capacity)
        self.shadow = LazyMinHeap(capacity)

    def __len__(self) -> int:
        return len(self.active)

    def __contains__(self, slot: int) -> bool:
        return slot in self.active

    def insert(self, slot: int, importance: float) -> None:
        """Add an admitted entry to both heaps."""
        self.active.push(slot, importance)
        self.shadow.push(slot, importance)

    def remove(self, slot: int) -> None:
        """Drop an entry (evicted or retired) from both heaps."""
        self.active.remove(slot)
        self.shadow.remove(slot)

    def update(self, slot: int, importance: float) -> None:
        """Record a new importance for a cached entry; takes effect at :meth:`swap`."""
        if slot in self.shadow:
            self.shadow.push(slot, importance)

    def minimum(self) -> Tuple[int, float]:
        """``(slot, importance)`` of the least important cached entry, or ``(-1, inf)``."""
        return self.active.peek()

    def admits(self, importance: float) -> bool:
        """Whether a missed sample of ``importance`` beats the current minimum."""
        return importance > self.active.peek()[1] if len(self.active) else True

    def pop_min(self) -> Tuple[int, float]:
        """Evict the least important entry from both heaps; ``(-1, inf)`` if empty."""
        slot, key = self.active.pop()
        if slot >= 0:
            self.shadow.remove(slot)
        return slot, key

    def insert_many(self, slots: np.ndarray, importance: np.ndarray) -> None:
        """:meth:`insert` for arrays."""
        self.active.push_many(slots, importance)
        self.shadow.push_many(slots, importance)

    def remove_many(self, slots: np.ndarray) -> None:
        """:meth:`remove` for arrays (absent slots are skipped)."""
        self.active.remove_many(slots)
        self.shadow.remove_many(slots)

    def update_many(self, slots: np.ndarray, importance: np.ndarray) -> None:
        """:meth:`update` for arrays (slots not cached are skipped)."""
        held = self.shadow.contains(slots)
        if np.count_nonzero(held) < len(held):
            slots, importance = slots[held], importance[held]
        if len(slots):
            self.shadow.push_many(slots, importance)

    def pop_below(self, importance: np.ndarray) -> np.ndarray:
        """Evict minima while ``importance[i]`` beats the ``i``-th one; int64 slots.

        ``importance`` is sorted in descending order, so the first refusal ends it.
        """
        out = []
        for w in importance.tolist():
            slot, low = self.active.peek()
            if slot < 0 or not w > low:
                break
            self.active.pop()
            self.shadow.remove(slot)
            out.append(slot)
        return np.array(out, np.int64)

    def contains(self, slots: np.ndarray) -> np.ndarray:
        """Bool mask: which ``slots`` are cached H entries."""
        return self.active.contains(slots)

    def grow(self, capacity: int) -> None:
        """Allow slot ids up to ``capacity - 1``."""
        self.active.grow(capacity)
        self.shadow.grow(capacity)

    def swap(self) -> None:
        """Epoch boundary: the shadow order becomes the admission order.

        The shadow's dead entries (entries re-keyed or removed during the epoch) are
        dropped first (one numpy sort, O(k log k)), so the new active heap does not pop
        them one sift at a time, and the fresh shadow (a copy) does not inherit them.
        """
        self.shadow.compact()
        self.active = self.shadow
        self.shadow = self.active.copy()
