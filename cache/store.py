"""SharedStore: one shared memory region of raw sample bytes for the node.

Memory:
    A :class:`SharedRegion` (``region.py``: anonymous memfds, shareable under fork,
    spawn and forkserver, freed by the kernel when the last holder dies). Its data
    mapping is exactly the sum of the pool sizes (``cache_bytes + staging_bytes``); its
    metadata mapping holds 16 bytes per entry slot (generation; length + first block)
    plus 4 bytes per block (the ``next`` chain).

Allocator:
    Each pool (H, L, staging or the single pool of a baseline) owns a disjoint range of
    fixed-size blocks (``block_bytes``); a record of ``n`` bytes takes
    ``ceil(n / block_bytes)`` blocks from its pool's free stack (see ``allocator.py``).
    The blocks of a record are chained through a shared ``next`` table, so any freed
    block is reusable (no external fragmentation); records that got ascending runs are
    flagged contiguous and read with one slice. Accounting is exact in blocks and bytes
    per pool; a pool never hands out more blocks than it has.

Entries and generations (seqlock, see ``reader.py``):
    The owner reserves a slot (the generation its bytes *will* carry is the slot's odd
    generation + 1), writes the bytes, then publishes by storing that even value.
    Freeing stores an odd value *before* the blocks return to the allocator, so a
    reader still holding the old ``(slot, generation)`` gets ``None``.

Deferred free:
    ``retire(slot)`` removes an entry logically. Its blocks are freed only once the
    owner reports, through ``release(seq)``, that every batch up to ``seq`` that
    referenced the entry (``touch(slot, seq)``) is consumed.

Only the creating process may change the store; any process may read it.
"""

from __future__ import annotations

import os
from array import array
from typing import Optional, Sequence, Tuple

import numpy as np

from .allocator import BlockAllocator
from .reader import _CONTIG, _LOW31, StoreReader
from .region import SharedRegion

__all__ = ["SharedStore"]

_PID = []  # this process's pid, refreshed in forked children (see _pid)


def _pid() -> int:
    # os.getpid() is a system call; cache it and let a fork hook refresh it.
    if not _PID:
        _PID.append(os.getpid())
        os.register_at_fork(after_in_child=lambda: _PID.__setitem__(0, os.getpid()))
    return _PID[0]

FREE, PENDING, LIVE, RETIRED = 0, 1, 2, 3


class SharedStore(StoreReader):
    """Variable-size records in fixed-size blocks of a shared memory region.

    The owner (creating process) reserves, writes, retires and releases entries; any
    process may :meth:`read` (inherited from :class:`StoreReader`). Pickling yields a
    :class:`StoreReader` attached to the same memory.

    Args:
        pools: ``(pool_id, nbytes)`` pairs; pool ids are small ints (the ``LOC_*``
            codes), sizes in bytes (>= 0). The data region is their exact sum.
        block_bytes: allocation unit in bytes (>= 64).
        max_entries: entry slots (default: one per block, which never runs out).

    Raises:
        ValueError: a size is negative or not an int, or a pool id repeats.
    """

    def __init__(self, *, pools: Sequence[Tuple[int, int]], block_bytes: int = 4096,
                 max_entries: Optional[int] = None) -> None:
        self._owner_pid = None
        if isinstance(block_bytes, bool) or not isinstance(block_bytes, int) \
                or block_bytes < 64:
            raise ValueError(f"block_bytes={block_bytes!r} must be an int >= 64; "
                             f"use e.g. 4096")
        self.block_bytes = block_bytes
        self._alloc = {}
        first = 0
        for pool, nbytes in pools:
            if isinstance(nbytes, bool) or not isinstance(nbytes, int) or nbytes < 0:
                raise ValueError(f"pool {pool} size={nbytes!r} bytes must be an int "
                                 f">= 0; pass 0 for an empty pool")
            if pool in self._alloc:
                raise ValueError(f"pool id {pool} given twice; pool ids must be unique")
            count = nbytes // block_bytes
            self._alloc[pool] = BlockAllocator(first, count)
            first += count
        self.n_blocks = first
        self.region_bytes = sum(n for _, n in pools)
        if max_entries is None:
            max_entries = max(self.n_blocks, 1)
        if isinstance(max_entries, bool) or not isinstance(max_entries, int) \
                or max_entries < 1:
            raise ValueError(f"max_entries={max_entries!r} must be an int >= 1; "
                             f"or pass None for one slot per block")
        self.max_entries = max_entries
        self._region = SharedRegion(self.region_bytes,
                                    16 * max_entries + 4 * max(self.n_blocks, 1))
        self._map()
        self._owner_pid = _pid()
        gens = np.frombuffer(self._region.meta, np.int64, 2 * max_entries)
        gens[0::2] = 1  # every free slot carries an odd generation
        del gens  # a live numpy view would keep the mapping from closing
        # Owner-only bookkeeping (6 bytes per slot; batch numbers are int32).
        self._state = array("b", bytes(max_entries))
        self._pool = array("b", [-1]) * max_entries
        self._last_use = array("i", [-1]) * max_entries
        self._free_slots = array("i", range(max_entries - 1, -1, -1))
        self._n_free_slots = max_entries
        self._retired = np.empty(max_entries, np.int32)
        self._n_retired = 0
        self._consumed = -1
        self._used_bytes = {p: 0 for p in self._alloc}
        self._retired_blocks = {p: 0 for p in self._alloc}

    # ------------------------------------------------------------------ owner
    def _check_owner(self) -> None:
        if self._owner_pid != _pid():
            raise RuntimeError("only the process that created the SharedStore may "
                               "change it; other processes may only read()")

    def blocks_for(self, nbytes: int) -> int:
        """Blocks a record of ``nbytes`` bytes occupies."""
        return -(-nbytes // self.block_bytes)

    def pool_blocks(self, pool: int) -> int:
        """Capacity of ``pool`` in blocks."""
        return self._alloc[pool].count

    def free_blocks(self, pool: int) -> int:
        """Blocks of ``pool`` free right now (retired entries not yet freed count as used)."""
        return self._alloc[pool].free_blocks

    def reclaimable_blocks(self, pool: int) -> int:
        """Free blocks of ``pool`` plus those of retired entries awaiting release."""
        return self._alloc[pool].free_blocks + self._retired_blocks[pool]

    def used_bytes(self, pool: int) -> int:
        """Exact record bytes held in ``pool`` (live and retired-not-yet-freed)."""
        return self._used_bytes[pool]

    def free_slot_count(self) -> int:
        """Entry slots available to :meth:`reserve`."""
        return self._n_free_slots

    def reclaimable_slots(self) -> int:
        """Free slots plus retired ones awaiting release."""
        return self._n_free_slots + self._n_retired

    def state(self, slot: int) -> int:
        """Owner-side state of ``slot`` (0 free, 1 pending, 2 live, 3 retired)."""
        return self._state[slot]

    def pool_of(self, slot: int) -> int:
        """Pool of a reserved ``slot`` (-1 if free)."""
        return self._pool[slot]

    def last_use(self, slot: int) -> int:
        """Highest batch sequence number that may read ``slot`` (-1: none)."""
        return self._last_use[slot]

    def reserve(self, pool: int) -> int:
        """Take a free slot in ``pool`` for a record to be written later.

        Returns:
            The slot, or -1 if all slots are taken. Its future generation is
            :meth:`generation`.
        """
        self._check_owner()
        if pool not in self._alloc:
            raise ValueError(f"pool={pool} is not a pool of this store; pools are "
                             f"{sorted(self._alloc)}")
        if self._n_free_slots == 0:
            return -1
        self._n_free_slots -= 1
        slot = self._free_slots[self._n_free_slots]
        self._state[slot] = PENDING
        self._pool[slot] = pool
        self._last_use[slot] = -1
        return slot

    def generation(self, slot: int) -> int:
        """Generation the bytes of a pending or live ``slot`` carry once published."""
        g = self._slots[2 * slot]
        return g + 1 if g & 1 else g

    def write(self, slot: int, data) -> bool:
        """Store ``data`` in pending ``slot`` and publish it.

        Args:
            slot: a slot from :meth:`reserve` not yet written.
            data: the record (bytes-like).

        Returns:
            False if the pool has too few free blocks right now (the slot stays
            pending); True once published.

        Raises:
            ValueError: the record is larger than the whole pool, or the slot is not
                pending.
        """
        self._check_owner()
        if self._state[slot] != PENDING:
            raise ValueError(f"slot {slot} is not pending (state "
                             f"{self._state[slot]}); reserve() it before write()")
        pool = self._pool[slot]
        alloc = self._alloc[pool]
        n = len(data)
        need = -(-n // self.block_bytes)
        if need > alloc.count or n >= 1 << 31:
            raise ValueError(
                f"record of {n} bytes is larger than pool {pool} "
                f"({alloc.count * self.block_bytes} bytes usable); raise cache_bytes "
                f"(or the share of this pool) or do not cache records this large")
        blocks = alloc.alloc(need) if need else []
        if blocks is None:
            return False
        bb = self.block_bytes
        mv = data if type(data) is bytes else memoryview(data).cast("B")
        if need == 0:
            w = _CONTIG
        elif need == 1 or blocks[-1] - blocks[0] == need - 1 and (
                need < 3 or blocks == list(range(blocks[0], blocks[0] + need))):
            off = blocks[0] * bb
            self._data[off:off + n] = mv
            w = _CONTIG | blocks[0]
        else:
            bl = blocks
            for i, b in enumerate(bl):
                self._data[b * bb:b * bb + min(bb, n - i * bb)] = mv[i * bb:(i + 1) * bb]
                self._next[b] = bl[i + 1] if i + 1 < need else -1
            w = bl[0]
        self._slots[2 * slot + 1] = (n << 32) | w
        self._slots[2 * slot] = self._slots[2 * slot] + 1  # publish: even
        self._state[slot] = LIVE
        self._used_bytes[pool] += n
        return True

    def touch(self, slot: int, seq: int) -> None:
        """Record that batch ``seq`` (< 2**31) may read ``slot`` (delays its reuse)."""
        if seq > self._last_use[slot]:
            self._last_use[slot] = seq

    def retire(self, slot: int) -> None:
        """Remove ``slot`` logically; free it once no unconsumed batch may read it.

        A pending slot is retired the same way: an annotation may already name it, so
        it must not be handed to another record before that batch is consumed.
        """
        self._check_owner()
        st = self._state[slot]
        if st == FREE or st == RETIRED:
            return
        if self._last_use[slot] <= self._consumed:
            self._free(slot)
        else:
            self._state[slot] = RETIRED
            if not self._slots[2 * slot] & 1:  # published: its blocks wait too
                self._retired_blocks[self._pool[slot]] += self.blocks_for(
                    self._slots[2 * slot + 1] >> 32)
            self._retired[self._n_retired] = slot
            self._n_retired += 1

    def release(self, seq: int) -> int:
        """Report every batch with sequence number <= ``seq`` consumed; free what can go.

        Returns:
            Number of entries freed.
        """
        self._check_owner()
        if seq > self._consumed:
            self._consumed = seq
        k = self._n_retired
        if k == 0:
            return 0
        ret = self._retired[:k]
        done = np.frombuffer(self._last_use, np.int32)[ret] <= self._consumed
        freed = ret[done].tolist()
        keep = ret[~done]
        self._retired[:len(keep)] = keep
        self._n_retired = len(keep)
        for slot in freed:
            self._free(slot)
        return len(freed)

    def _free(self, slot: int) -> None:
        slots = self._slots
        g = slots[2 * slot]
        pool = self._pool[slot]
        # Odd generation first: readers of the old bytes see the change and miss. A
        # never-published slot skips the generation its reservation promised.
        slots[2 * slot] = g + 2 if g & 1 else g + 1
        if not g & 1:  # published: give its blocks back
            w = slots[2 * slot + 1]
            n = w >> 32
            need = -(-n // self.block_bytes)
            if self._state[slot] == RETIRED:
                self._retired_blocks[pool] -= need
            if need == 1:
                self._alloc[pool].free([w & _LOW31])
            elif need:
                self._alloc[pool].free(self.entry_blocks(slot))
            self._used_bytes[pool] -= n
        self._state[slot] = FREE
        self._pool[slot] = -1
        self._free_slots[self._n_free_slots] = slot
        self._n_free_slots += 1

