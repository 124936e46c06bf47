"""HCache: the importance min-heap over cached H-samples, with a shadow heap.

The *active* heap orders the cached H entries (store slots) by the importance they had
when the epoch started; admission compares a missed H-sample with its minimum. During
the epoch, importance updates go only to the *shadow* heap, so the admission order
stays stable while the sampler keeps learning. Admissions and evictions go to both.
At the epoch boundary :meth:`swap` makes the shadow the active heap (a reference swap)
and re-seeds a fresh shadow as a copy of it (O(k) C-speed array copies for k entries).
Neither heap is ever touched by DataLoader workers, so a swap blocks no reader.

Memory per cached H entry: two float32 keys (8 bytes) plus one 8-byte entry in each
heap (16 bytes), with transient dead entries until a heap rebuild (see ``heap.py``).
"""

from __future__ import annotations

from typing import Tuple

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

    def swap(self) -> None:
        """Epoch boundary: the shadow order becomes the admission order."""
        self.active = self.shadow
        self.shadow = self.active.copy()
