"""LCache: bookkeeping of the L-cache (packages of low-importance samples).

The L-cache is filled with *packages*: contiguous index runs read with one
``read_many`` call, so refilling it costs sequential, not random, I/O. Its entries
(store slots) sit in a FIFO ring in load order. Each entry remembers the epoch it was
last used in; an L-sample that misses is answered by a *substitute*: the next cached
entry in ring order not yet used this epoch (found by a cursor that only moves forward,
so a lookup is amortised O(1)). A substitute is used at most once per epoch; when none
is left the L-cache is exhausted and the lookup is a miss.

Eviction takes the oldest entries, but only while they were used this epoch or have sat
a whole epoch unused, so a refill never throws away substitutes that are still fresh.

Every operation takes a batch of slots and scans the ring in numpy windows. Memory:
12 bytes per slot (ring cell and position: int32; last-used and load epochs: int16,
kept mod 2**15 and compared only for equality).
"""

from __future__ import annotations

import numpy as np

__all__ = ["LCache"]

_POS_LIMIT = (1 << 31) - 1  # ring positions are int32; compact before they overflow
_NONE = np.empty(0, np.int64)


class LCache:
    """FIFO of L entries with per-epoch substitute bookkeeping.

    Args:
        capacity: number of store slots (entry ids are ``0 .. capacity-1``).
    """

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self._ring = np.full(max(capacity, 1), -1, np.int32)  # slot, or -1 (hole)
        # Absolute ring position of each slot; a final -2 sentinel answers ring holes
        # (index -1) with a position no cell has, so liveness is one comparison.
        self._pos = np.full(capacity + 1, -1, np.int32)
        self._pos[-1] = -2
        self._used = np.full(capacity, -1, np.int16)     # epoch last used in
        self._loaded = np.full(capacity, -1, np.int16)   # epoch loaded in
        self._head = self._tail = self._cursor = 0       # absolute positions
        self._live = 0
        self.unused = 0  # live entries not yet used this epoch
        self.epoch = 0
        # The epoch as a 0-d int16 array: comparing the int16 arrays with it skips the
        # conversion of a Python int (half the cost of such a comparison on short arrays).
        self._ep = np.array(0, np.int16)

    def __len__(self) -> int:
        return self._live

    def __contains__(self, slot: int) -> bool:
        return bool(self._pos[slot] >= 0)

    def contains(self, slots: np.ndarray) -> np.ndarray:
        """Bool mask: which ``slots`` are L entries."""
        return self._pos[slots] >= 0

    def grow(self, capacity: int) -> None:
        """Allow slot ids up to ``capacity - 1``."""
        extra = capacity - self.capacity
        if extra > 0:
            self._pos = np.concatenate([self._pos[:-1], np.full(extra, -1, np.int32),
                                        self._pos[-1:]])
            self._used = np.concatenate([self._used, np.full(extra, -1, np.int16)])
            self._loaded = np.concatenate([self._loaded, np.full(extra, -1, np.int16)])
            self.capacity = capacity

    def add(self, slots: np.ndarray, used: np.ndarray) -> None:
        """Append newly loaded entries (``used[i]``: delivered this epoch already)."""
        k = len(slots)
        if self._tail - self._head + k > len(self._ring) or self._tail + k >= _POS_LIMIT:
            self._compact(k)
        n, a = len(self._ring), self._tail % len(self._ring)
        if a + k <= n:
            self._ring[a:a + k] = slots
        else:
            self._ring[a:] = slots[:n - a]
            self._ring[:a + k - n] = slots[n - a:]
        self._pos[slots] = np.arange(self._tail, self._tail + k)
        self._tail += k
        n_used = np.count_nonzero(used)
        if n_used == 0 or n_used == k:
            self._used[slots] = self.epoch if n_used else -1
        else:
            self._used[slots] = np.where(used, self.epoch, -1)
        self._loaded[slots] = self.epoch
        self._live += k
        self.unused += k - n_used

    def remove(self, slots: np.ndarray) -> None:
        """Forget entries (evicted or abandoned); their ring cells become holes."""
        live = self._pos[slots] >= 0
        if np.count_nonzero(live) < len(slots):
            slots = slots[live]
        if len(slots):
            self._pos[slots] = -1
            self._live -= len(slots)
            self.unused -= int(np.count_nonzero(self._used[slots] != self._ep))

    def use(self, slots: np.ndarray) -> None:
        """Mark entries used this epoch (direct hits or substitutions)."""
        fresh = self._used[slots] != self._ep
        n_fresh = np.count_nonzero(fresh)
        if n_fresh:
            fresh = slots[fresh] if n_fresh < len(slots) else slots
            self._used[fresh] = self.epoch
            if n_fresh > 1:  # a slot repeated in ``fresh`` counts once
                fresh = np.sort(fresh)
                self.unused -= 1 + int(np.count_nonzero(fresh[1:] != fresh[:-1]))
            else:
                self.unused -= 1

    def _window(self, start: int, width: int):
        """Ring positions ``start ..`` (at most ``width``): their slots and liveness."""
        stop = min(self._tail, start + width)
        ring, n = self._ring, len(self._ring)
        a, w = start % n, stop - start
        s = ring[a:a + w] if a + w <= n else np.concatenate((ring[a:], ring[:a + w - n]))
        return s, self._pos[s] == np.arange(start, stop, dtype=np.int32)

    def take_substitutes(self, n: int) -> np.ndarray:
        """Up to ``n`` entries not yet used this epoch, in ring order, marked used."""
        out, got, width = [], 0, 2 * n + 64
        c = max(self._cursor, self._head)
        while got < n and self.unused > got and c < self._tail:
            s, ok = self._window(c, width)
            ok &= self._used[s] != self._ep  # (holes read the last slot: masked)
            idx = ok.nonzero()[0]
            if len(idx) > n - got:
                idx = idx[:n - got]
                c += int(idx[-1]) + 1
            else:
                c += len(s)
            width *= 4  # few windows even when the cursor must skip many used entries
            out.append(s[idx])
            got += len(idx)
        self._cursor = c
        if not got:
            return _NONE
        taken = (out[0] if len(out) == 1 else np.concatenate(out)).astype(np.int64)
        self._used[taken] = self.epoch
        self.unused -= got
        return taken

    def victims(self, n: int) -> np.ndarray:
        """Remove and return up to ``n`` oldest entries that may go (see the module)."""
        out, got = [], 0
        while got < n and self._head < self._tail:
            s, live = self._window(self._head, 2 * (n - got) + 64)
            at = live.nonzero()[0]
            sl = s[at]
            used = self._used[sl] == self._ep
            may = used | (self._loaded[sl] != self._ep)
            n_may = np.count_nonzero(may)
            stop = int(may.argmin()) if n_may < len(may) else len(may)
            k = min(stop, n - got)
            if k:
                out.append(sl[:k])
                got += k
                self.unused -= k - int(np.count_nonzero(used[:k]))
            if k < len(at):  # stopped at a blocking entry, or enough victims
                self._head += int(at[k])
                break
            self._head += len(s)
        if not got:
            return _NONE
        taken = (out[0] if len(out) == 1 else np.concatenate(out)).astype(np.int64)
        self._pos[taken] = -1  # live entries: remove() without its checks
        self._live -= got
        return taken

    def new_epoch(self) -> None:
        """Every cached entry becomes a fresh substitute again."""
        self.epoch = (self.epoch + 1) & 0x7FFF
        self._ep = np.array(self.epoch, np.int16)
        self._cursor = self._head
        self.unused = self._live

    def _compact(self, extra: int) -> None:
        s, live = self._window(self._head, self._tail - self._head)
        keep = s[live]
        cursor_rank = int(np.count_nonzero(live[:max(self._cursor - self._head, 0)]))
        size = max(len(self._ring), len(keep) + extra)
        if size > len(self._ring):
            size = max(size, int(len(self._ring) * 1.125) + 64)
        self._ring = np.full(size, -1, np.int32)
        self._ring[:len(keep)] = keep
        self._pos[keep] = np.arange(len(keep))
        self._head, self._tail, self._cursor = 0, len(keep), cursor_rank
