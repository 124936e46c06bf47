"""SlotTable: the owner's per-slot state of the store, grown as entries are needed.

An entry slot names one record for readers (``(slot, generation)`` in a plan). The
shared metadata mapping reserves 12 bytes for each of ``max_entries`` slots, but it is
a sparse memfd: a page is backed by memory only once written, and slots are handed out
lowest id first (freed slots are reused before new ones), so the resident shared
metadata follows the number of entries in use, not ``max_entries``.

The owner-side arrays below (10 bytes per slot) start at :data:`INITIAL_SLOTS` and grow
by :data:`GROWTH` when more slots are needed, so records spanning several blocks do
not pay for one slot per block. Whoever keeps arrays indexed by slot (the directory,
the policies) grows them to :attr:`SlotTable.capacity` as well.

Generations (int32, never wrapping): 0 means never used; a free or pending slot holds
an odd value (or 0); reserving promises the next even value, publishing stores it,
freeing stores the next odd value -- past the promise if it was never published, so a
reader holding a stale promise can never see it come true for other bytes. A slot
whose generation nears 2**31 is not reused (one slot per ~10**9 reuses), so the
arithmetic never wraps.
"""

from __future__ import annotations

import numpy as np

__all__ = ["SlotTable", "pool_groups", "FREE", "PENDING", "LIVE", "RETIRED",
           "INITIAL_SLOTS", "GROWTH", "GEN_LIMIT", "generations_of", "promise", "unique"]

FREE, PENDING, LIVE, RETIRED = 0, 1, 2, 3
INITIAL_SLOTS = 512   # owner-side slots allocated up front
GROWTH = 1.125        # capacity factor per growth step (bounds the unused tail to 1/9)


GEN_LIMIT = (1 << 31) - 8  # a freed slot at or above this generation is not reused


def promise(g: int) -> int:
    """Generation a slot holding the unpublished generation ``g`` will publish."""
    return (g | 1) + 1


def generations_of(g: np.ndarray) -> np.ndarray:
    """Generation each slot's bytes carry: ``g`` if published (even, > 0), else the
    promise ``(g | 1) + 1`` (int32 in, int64 out)."""
    g = g.astype(np.int64)
    return np.maximum(g + (g & 1), 2)


def unique(a: np.ndarray) -> np.ndarray:
    """Sorted distinct values of ``a`` (cheaper than ``np.unique`` on short arrays)."""
    if len(a) < 2:
        return a
    s = np.sort(a)
    return s[np.concatenate(([True], s[1:] != s[:-1]))]


def pool_groups(pools) -> list:
    """``[(pool, mask)]`` grouping slots by pool. ``pools`` is one pool id for every
    slot (an int) or a non-empty array of one id per slot. ``[(p, None)]`` when every
    slot is in pool ``p`` (the common case, no mask built), else one boolean mask per
    distinct pool, in pool order."""
    if isinstance(pools, (int, np.integer)):
        return [(int(pools), None)]
    p0 = int(pools[0])
    if np.count_nonzero(pools != p0) == 0:
        return [(p0, None)]
    return [(p, pools == p) for p in sorted(set(pools.tolist()))]


class SlotTable:
    """Owner-side arrays of the entry slots plus the shared generation/length/head.

    Args:
        shared: int32 array of shape ``(max_entries, 3)`` over the shared metadata.
        max_entries: most slots that may ever be in use.
    """

    def __init__(self, shared: np.ndarray, max_entries: int) -> None:
        self.max_entries = max_entries
        self.gen, self.length, self.head = shared[:, 0], shared[:, 1], shared[:, 2]
        cap = min(max_entries, INITIAL_SLOTS)
        self.state = np.zeros(cap, np.int8)          # FREE / PENDING / LIVE / RETIRED
        self.pool = np.full(cap, -1, np.int8)        # pool id, -1 when free
        self.last_use = np.full(cap, -1, np.int32)   # last batch that may read it
        self._free = np.empty(cap, np.int32)         # stack of freed slot ids
        self._n_free = 0
        self.high = 0                                # slots >= high were never used

    @property
    def capacity(self) -> int:
        """Length of the owner-side arrays (slots usable without growing)."""
        return len(self.state)

    def free_count(self) -> int:
        """Slots :meth:`take` can hand out now."""
        return self._n_free + self.max_entries - self.high

    def generations(self, slots: np.ndarray) -> np.ndarray:
        """Generation each slot's bytes carry once (or since) published (int64)."""
        return generations_of(self.gen[slots])

    def take(self, k: int, pool: int, seq: int = -1) -> np.ndarray:
        """Reserve ``k`` (<= :meth:`free_count`) slots in ``pool``, last used by batch
        ``seq``; returns int64 ids."""
        n_free = self._n_free
        if k <= n_free:  # freed slots only: the common case
            slots = self._free[n_free - k:n_free][::-1].astype(np.int64)
            self._n_free = n_free - k
        else:
            reused = self._free[:n_free][::-1].astype(np.int64)
            self._n_free = 0
            fresh = np.arange(self.high, self.high + k - n_free, dtype=np.int64)
            self.high += k - n_free
            if self.high > self.capacity:
                self._grow(self.high)
            slots = np.concatenate([reused, fresh]) if n_free else fresh
        self.state[slots] = PENDING
        self.pool[slots] = pool
        self.last_use[slots] = seq
        return slots

    def give(self, slots: np.ndarray) -> None:
        """Return freed ``slots`` (state already FREE, generation below
        :data:`GEN_LIMIT`) for reuse."""
        n = len(slots)
        self._free[self._n_free:self._n_free + n] = slots
        self._n_free += n

    def _grow(self, need: int) -> None:
        cap = min(self.max_entries, max(need, int(self.capacity * GROWTH) + 64))
        extra = cap - self.capacity
        self.state = np.concatenate([self.state, np.zeros(extra, np.int8)])
        self.pool = np.concatenate([self.pool, np.full(extra, -1, np.int8)])
        self.last_use = np.concatenate([self.last_use, np.full(extra, -1, np.int32)])
        self._free = np.concatenate([self._free, np.empty(extra, np.int32)])
