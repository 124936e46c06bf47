"""DeferredFree: retiring store entries and freeing them once no batch can read them.

The owner side of the store's *deferred free* (mixed into :class:`SharedStore`).
``retire`` removes an entry logically: if every batch that touched it
(``last_use``) is already consumed it is freed at once, otherwise it is parked as
RETIRED -- still readable with its old generation -- and its blocks count as
*reclaimable* for admission. ``release(seq)`` reports batches up to ``seq`` consumed
and frees the parked entries no unconsumed batch can read. Freeing stores an odd
generation *before* the blocks go back to the allocator, so a reader holding the old
``(slot, generation)`` misses instead of reading reused bytes.
"""

from __future__ import annotations

import numpy as np

from .layout import chain_of
from .slots import FREE, GEN_LIMIT, LIVE, PENDING, RETIRED

__all__ = ["DeferredFree"]


class DeferredFree:
    """Retire/release of :class:`SharedStore` entries (see the module docstring).

    Uses the store's slot table ``_t``, allocators ``_alloc``, per-pool counters
    ``_used_bytes`` / ``_retired_blocks`` and ``_retired`` / ``_consumed``.
    """

    def retire(self, slot: int) -> None:
        """Remove ``slot`` logically; free it once no unconsumed batch may read it.

        A pending slot is retired the same way: an annotation may already name it, so
        it must not be handed to another record before that batch is consumed.
        """
        self._check_owner()
        self.retire_many(np.array([slot], np.int64))

    def retire_many(self, slots: np.ndarray, current: bool = False) -> None:
        """:meth:`retire` for distinct slots (free and retired ones are skipped).

        ``current``: the caller knows every slot is pending or live (skips a check).
        """
        t = self._t
        slots = np.asarray(slots, np.int64)
        if not current:
            st = t.state[slots]
            held = (st == PENDING) | (st == LIVE)
            if np.count_nonzero(held) < len(held):
                slots = slots[held]
        now = t.last_use[slots] <= self._consumed
        if np.count_nonzero(now) == len(now):
            self._free_many(slots)
            return
        self._free_many(slots[now])
        later = slots[~now]
        t.state[later] = RETIRED
        np.add.at(self._retired_blocks, t.pool[later], self._blocks_of(later))
        self._retired = np.concatenate([self._retired, later])

    def release(self, seq: int) -> int:
        """Report every batch with sequence number <= ``seq`` consumed; free what can go.

        Returns:
            Number of entries freed.
        """
        self._check_owner()
        if seq > self._consumed:
            self._consumed = seq
        ret = self._retired
        if not len(ret):
            return 0
        done = self._t.last_use[ret] <= self._consumed
        if not np.count_nonzero(done):
            return 0
        self._retired = ret[~done]
        freed = ret[done]
        blocks = self._blocks_of(freed)
        np.subtract.at(self._retired_blocks, self._t.pool[freed], blocks)
        self._free_many(freed)
        return len(freed)

    def _blocks_of(self, slots: np.ndarray) -> np.ndarray:
        """Blocks held by each slot (0 unless published)."""
        t, bb = self._t, self.block_bytes
        g = t.gen[slots]
        n = t.length[slots].astype(np.int64)
        contiguous = -(-n // bb)
        chained = np.where(n > bb, 1 + -(-(n - bb) // (bb - 4)), 1)
        blocks = np.where(t.head[slots] >= 0, contiguous, chained)
        return np.where(((g & 1) == 0) & (g != 0), blocks, 0)

    def _free_many(self, slots: np.ndarray) -> None:
        if not len(slots):
            return
        t = self._t
        g = t.gen[slots]
        unpublished = (g & 1) | (g == 0)  # 1 where odd or never used
        # Odd generation first: readers of the old bytes see the change and miss. A
        # never-published slot skips the generation its reservation promised:
        # published g -> g + 1; unpublished g -> promise (g | 1) + 1, plus one.
        odd = (g | 1) + 2 * unpublished
        t.gen[slots] = odd
        if np.count_nonzero(unpublished):
            self._give_back(slots[unpublished == 0])
        else:
            self._give_back(slots)
        t.state[slots] = FREE
        t.pool[slots] = -1
        reusable = odd < GEN_LIMIT
        t.give(slots if np.count_nonzero(reusable) == len(slots) else slots[reusable])

    def _give_back(self, slots: np.ndarray) -> None:
        """Return the blocks and bytes of published ``slots`` to their pools."""
        if not len(slots):
            return
        t, bb = self._t, self.block_bytes
        n = t.length[slots].astype(np.int64)
        head = t.head[slots]
        pools = t.pool[slots]
        p0 = int(pools[0])
        groups = [(p0, None)] if np.count_nonzero(pools != p0) == 0 else [
            (p, pools == p) for p in set(pools.tolist())]
        for p, mine in groups:
            nn, hh = (n, head) if mine is None else (n[mine], head[mine])
            self._used_bytes[p] -= int(nn.sum())
            chained = hh < 0
            run = nn > 0
            if np.count_nonzero(chained) or np.count_nonzero(run) < len(run):
                run &= ~chained
                self._alloc[p].give_runs(hh[run], (nn[run] + (bb - 1)) // bb)
                for h, m in zip(hh[chained].tolist(), nn[chained].tolist()):
                    self._alloc[p].give_blocks(chain_of(self._data, bb, ~h, m))
            else:  # all contiguous and not empty: the common case
                self._alloc[p].give_runs(hh, (nn + (bb - 1)) // bb)
