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

from typing import Optional

import numpy as np

from .layout import chain_of
from .slots import FREE, GEN_LIMIT, LIVE, PENDING, RETIRED, pool_groups

__all__ = ["DeferredFree"]


class DeferredFree:
    """Retire/release of :class:`SharedStore` entries (see the module docstring).

    Uses the store's slot table ``_t``, allocators ``_alloc``, per-pool byte counters
    ``_used_bytes``, the retired slots ``_retired_parts`` (arrays, ``_n_retired`` slots
    in all; their blocks are counted only when :meth:`reclaimable_blocks` asks) and
    ``_consumed``.
    """

    def retire(self, slot: int) -> None:
        """Remove ``slot`` logically; free it once no unconsumed batch may read it.

        A pending slot is retired the same way: an annotation may already name it, so
        it must not be handed to another record before that batch is consumed.
        """
        self._check_owner()
        self.retire_many(np.array([slot], np.int64))

    def retire_many(self, slots: np.ndarray, current: bool = False,
                    pool: Optional[int] = None) -> None:
        """:meth:`retire` for distinct slots (free and retired ones are skipped).

        ``current``: the caller knows every slot is pending or live (skips a check).
        ``pool``: the caller knows every slot is in this pool (skips grouping by pool).
        """
        t = self._t
        slots = np.asarray(slots, np.int64)
        if not current:
            st = t.state[slots]
            held = (st == PENDING) | (st == LIVE)
            if np.count_nonzero(held) < len(held):
                slots = slots[held]
        now = t.last_use[slots] <= self._consumed_0d
        n_now = np.count_nonzero(now)
        if n_now == len(now):
            self._free_many(slots, pool)
            return
        if n_now:
            self._free_many(slots[now], pool)
            later = slots[~now]
        else:
            later = slots
        t.state[later] = RETIRED
        self._retired_parts.append(later)
        self._n_retired += len(later)

    def _retired_slots(self) -> np.ndarray:
        """Every retired slot awaiting release, as one array."""
        parts = self._retired_parts
        if len(parts) != 1:
            parts[:] = [np.concatenate(parts) if parts else np.empty(0, np.int64)]
        return parts[0]

    def release(self, seq: int) -> int:
        """Report every batch with sequence number <= ``seq`` consumed; free what can go.

        Returns:
            Number of entries freed.
        """
        self._check_owner()
        if seq > self._consumed:
            self._consumed = seq
            self._consumed_0d = np.array(seq, np.int32)
        if not self._n_retired:
            return 0
        ret = self._retired_slots()
        done = self._t.last_use[ret] <= self._consumed_0d
        n_done = np.count_nonzero(done)
        if not n_done:
            return 0
        if n_done == len(ret):
            freed = ret
            self._retired_parts[:] = []
        else:
            freed = ret[done]
            self._retired_parts[:] = [ret[~done]]
        self._n_retired -= n_done
        self._free_many(freed)
        return n_done

    def reclaimable_blocks(self, pool: int) -> int:
        """Free blocks of ``pool`` plus those of retired entries awaiting release."""
        ret = self._retired_slots()
        held = self._blocks_of(ret[self._t.pool[ret] == pool]) if len(ret) else ret
        return self._alloc[pool].free_blocks + sum(held.tolist())

    def _blocks_of(self, slots: np.ndarray) -> np.ndarray:
        """Blocks held by each slot (0 unless published)."""
        t, bb = self._t, self.block_bytes
        g = t.gen[slots]
        n = t.length[slots].astype(np.int64)
        head = t.head[slots]
        blocks = -(-n // bb)
        if np.count_nonzero(head < 0):  # chained records
            chained = np.where(n > bb, 1 + -(-(n - bb) // (bb - 4)), 1)
            blocks = np.where(head >= 0, blocks, chained)
        return np.where(((g & 1) == 0) & (g != 0), blocks, 0)

    def _free_many(self, slots: np.ndarray, pool: Optional[int] = None) -> None:
        if not len(slots):
            return
        t = self._t
        # Odd generation first: readers of the old bytes see the change and miss. A
        # never-published slot skips the generation its reservation promised:
        # published g -> g + 1; unpublished g (odd, or 0: never used, read as 1) ->
        # promise (g | 1) + 1, plus one.
        g = np.maximum(t.gen[slots], _ONE)
        unpublished = g & _ONE
        odd = g + unpublished
        odd += _ONE
        t.gen[slots] = odd
        n_unpublished = np.count_nonzero(unpublished)
        if n_unpublished < len(slots):
            self._give_back(slots[unpublished == 0] if n_unpublished else slots, pool)
        t.state[slots] = FREE
        t.pool[slots] = -1
        reusable = odd < _GEN_LIMIT
        t.give(slots if np.count_nonzero(reusable) == len(slots) else slots[reusable])

    def _give_back(self, slots: np.ndarray, pool: Optional[int] = None) -> None:
        """Return the blocks and bytes of published ``slots`` to their pools
        (``pool``: known to be the pool of every slot)."""
        t, bb = self._t, self.block_bytes
        n = t.length[slots].astype(np.int64)
        head = t.head[slots]
        for p, mine in pool_groups(t.pool[slots] if pool is None else pool):
            nn, hh = (n, head) if mine is None else (n[mine], head[mine])
            self._used_bytes[p] -= sum(nn.tolist())
            chained = hh < _ZERO
            if np.count_nonzero(chained) or np.count_nonzero(nn) < len(nn):
                run = (nn > 0) & ~chained
                self._alloc[p].give_runs(hh[run], (nn[run] + (bb - 1)) // bb)
                for h, m in zip(hh[chained].tolist(), nn[chained].tolist()):
                    self._alloc[p].give_blocks(chain_of(self._data, bb, ~h, m))
            else:  # all contiguous and not empty: the common case
                bb_minus_1, bb_0d = self._bb_0d
                nn += bb_minus_1
                nn //= bb_0d  # blocks of each record
                self._alloc[p].give_runs(hh, nn)


# 0-d int32 constants: a comparison of an int32 array with one costs about half of
# one with a Python int (no conversion of the scalar), on the short arrays of a batch.
_ZERO, _ONE, _GEN_LIMIT = (np.array(v, np.int32) for v in (0, 1, GEN_LIMIT))
