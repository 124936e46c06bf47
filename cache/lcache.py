"""LCache: bookkeeping of the L-cache (packages of low-importance samples).

The L-cache is filled with *packages*: contiguous index runs read with one
``read_many`` call, so refilling it costs sequential, not random, I/O. Its entries
(store slots) sit in a FIFO ring in load order. Each entry remembers the epoch it was
last used in; an L-sample that misses is answered by a *substitute*: the next cached
entry in ring order not yet used this epoch (found by a cursor that only moves forward,
so a lookup is amortised O(1)). A substitute is used at most once per epoch; when none
is left the L-cache is exhausted and the lookup is a miss.

Eviction takes the oldest entry, but only once it was used this epoch or has sat a whole
epoch unused, so a refill never throws away substitutes that are still fresh.
Memory: 12 bytes per slot (ring cell and position: int32; last-used and load epochs:
int16, kept mod 2**15 and compared only for equality).
"""

from __future__ import annotations

from array import array

__all__ = ["LCache"]

_POS_LIMIT = (1 << 31) - 1  # ring positions are int32; compact before they overflow


class LCache:
    """FIFO of L entries with per-epoch substitute bookkeeping.

    Args:
        capacity: number of store slots (entry ids are ``0 .. capacity-1``).
    """

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self._ring = array("i", [-1]) * max(capacity, 1)
        self._pos = array("i", [-1]) * capacity     # absolute ring position of a slot
        # Epochs are kept mod 2**15 (2 bytes) and only compared for equality.
        self._used = array("h", [-1]) * capacity    # epoch the entry was last used in
        self._loaded = array("h", [-1]) * capacity  # epoch the entry was loaded in
        self._head = self._tail = self._cursor = 0  # absolute positions
        self._live = 0
        self.unused = 0  # live entries not yet used this epoch
        self.epoch = 0

    def __len__(self) -> int:
        return self._live

    def __contains__(self, slot: int) -> bool:
        return self._pos[slot] >= 0

    def add(self, slot: int, used: bool = False) -> None:
        """Append a newly loaded entry (``used``: its sample was delivered this epoch)."""
        if self._tail - self._head == len(self._ring) or self._tail >= _POS_LIMIT:
            self._compact()
        self._ring[self._tail % len(self._ring)] = slot
        self._pos[slot] = self._tail
        self._tail += 1
        self._used[slot] = self.epoch if used else -1
        self._loaded[slot] = self.epoch
        self._live += 1
        if not used:
            self.unused += 1

    def remove(self, slot: int) -> None:
        """Forget an entry (evicted or abandoned); its ring cell becomes a hole."""
        if self._pos[slot] < 0:
            return
        self._pos[slot] = -1
        self._live -= 1
        if self._used[slot] != self.epoch:
            self.unused -= 1

    def use(self, slot: int) -> None:
        """Mark an entry used this epoch (a direct hit or a substitution)."""
        if self._used[slot] != self.epoch:
            self._used[slot] = self.epoch
            self.unused -= 1

    def take_substitute(self) -> int:
        """Next entry not yet used this epoch, marked used; -1 if exhausted."""
        if self.unused <= 0:
            return -1
        ring, n, epoch = self._ring, len(self._ring), self.epoch
        c = max(self._cursor, self._head)
        while c < self._tail:
            slot = ring[c % n]
            c += 1
            if slot >= 0 and self._pos[slot] == c - 1 and self._used[slot] != epoch:
                self._cursor = c
                self.use(slot)
                return slot
        self._cursor = c
        return -1

    def victim(self) -> int:
        """Oldest entry if it may go (used this epoch or loaded before it); else -1."""
        ring, n = self._ring, len(self._ring)
        while self._head < self._tail:
            slot = ring[self._head % n]
            if slot >= 0 and self._pos[slot] == self._head:
                if self._used[slot] == self.epoch or self._loaded[slot] != self.epoch:
                    return slot
                return -1
            self._head += 1
        return -1

    def new_epoch(self) -> None:
        """Every cached entry becomes a fresh substitute again."""
        self.epoch = (self.epoch + 1) & 0x7FFF
        self._cursor = self._head
        self.unused = self._live

    def _compact(self) -> None:
        n = len(self._ring)
        live = [self._ring[p % n] for p in range(self._head, self._tail)]
        live = [s for s, p in zip(live, range(self._head, self._tail))
                if s >= 0 and self._pos[s] == p]
        cursor_rank = sum(1 for s in live if self._pos[s] < self._cursor)
        self._ring = array("i", [-1]) * n
        for i, s in enumerate(live):
            self._ring[i] = s
            self._pos[s] = i
        self._head, self._tail, self._cursor = 0, len(live), cursor_rank
