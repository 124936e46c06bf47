"""SharedStore: one shared memory region of raw sample bytes for the node.

Memory:
    A :class:`SharedRegion` (``region.py``: anonymous memfds, shareable under fork,
    spawn and forkserver, freed by the kernel when the last holder dies). Its data
    mapping is exactly the sum of the pool sizes (``cache_bytes + staging_bytes``); its
    metadata mapping reserves 12 bytes per entry slot (generation, length, head; see
    ``reader.py``), backed by memory only for the slots in use (``slots.py``).

Allocator:
    Each pool (H, L, staging or the single pool of a baseline) owns a disjoint range of
    fixed-size blocks (``block_bytes``). Its free blocks are a stack of free runs in
    numpy arrays (``allocator.py``): no per-block metadata. A record takes adjacent
    blocks when a run fits and is chained through any free blocks when free space is
    fragmented (``layout.py``). Accounting is exact in blocks and bytes per pool; a pool
    never hands out more blocks than it has.

Entries and generations (seqlock, see ``reader.py``):
    The owner reserves a slot (the generation its bytes *will* carry is promised at
    once), writes the bytes, then publishes by storing the promised value. Freeing
    stores an odd value *before* the blocks return to the allocator, so a reader still
    holding the old ``(slot, generation)`` gets ``None``.

Deferred free (``deferred.py``):
    ``retire(slot)`` removes an entry logically. Its blocks are freed only once the
    owner reports, through ``release(seq)``, that every batch up to ``seq`` that
    referenced the entry (``touch(slot, seq)``) is consumed.

Only the creating process may change the store; any process may read it. The ``*_many``
methods are the batch forms the cache directory uses (one owner check per call).
"""

from __future__ import annotations

import os
from typing import Optional, Sequence, Tuple

import numpy as np

from .allocator import RunAllocator
from .layout import chained_blocks, write_chained
from .checks import store_layout
from .deferred import DeferredFree
from .reader import SLOT_BYTES, StoreReader
from .region import SharedRegion
from .slots import FREE, LIVE, PENDING, RETIRED, SlotTable

__all__ = ["SharedStore", "FREE", "PENDING", "LIVE", "RETIRED"]

_PID = []  # this process's pid, refreshed in forked children (see _pid)


def _pid() -> int:
    # os.getpid() is a system call; cache it and let a fork hook refresh it.
    if not _PID:
        _PID.append(os.getpid())
        os.register_at_fork(after_in_child=lambda: _PID.__setitem__(0, os.getpid()))
    return _PID[0]


class SharedStore(DeferredFree, StoreReader):
    """Variable-size records in fixed-size blocks of a shared memory region.

    The owner (creating process) reserves, writes, retires and releases entries; any
    process may :meth:`read` (inherited from :class:`StoreReader`). Pickling yields a
    :class:`StoreReader` attached to the same memory.

    Args:
        pools: ``(pool_id, nbytes)`` pairs; pool ids are small ints (the ``LOC_*``
            codes, < 8), sizes in bytes (>= 0). The data region is their exact sum.
        block_bytes: allocation unit in bytes (>= 64).
        max_entries: most entry slots in use at once (default: one per block, which
            never runs out); owner arrays grow up to it as entries are needed.

    Raises:
        ValueError: a size is negative or not an int, or a pool id repeats.
    """

    def __init__(self, *, pools: Sequence[Tuple[int, int]], block_bytes: int = 4096,
                 max_entries: Optional[int] = None) -> None:
        self._owner_pid = None
        ranges, self.n_blocks, max_entries = store_layout(pools, block_bytes, max_entries)
        self.block_bytes = block_bytes
        self.region_bytes = sum(n for _, n in pools)
        self.max_entries = max_entries
        self._region = SharedRegion(self.region_bytes, SLOT_BYTES * max_entries)
        self._map()
        self._owner_pid = _pid()
        self._alloc = {p: RunAllocator(a, n)
                       for p, (a, n) in ranges.items()}
        shared = np.frombuffer(self._region.meta, np.int32, 3 * max_entries)
        self._t = SlotTable(shared.reshape(max_entries, 3), max_entries)
        self._retired_parts = []  # arrays of retired slots awaiting release
        self._n_retired = 0
        self._consumed = -1
        self._consumed_0d = np.array(-1, np.int32)  # the same, for comparisons
        self._bb_0d = (np.array(block_bytes - 1, np.int64), np.array(block_bytes, np.int64))
        self._used_bytes = np.zeros(8, np.int64)      # per pool id

    def _drop_views(self) -> None:
        self.__dict__.pop("_t", None)  # numpy views keep the mapping from closing
        self.__dict__.pop("_alloc", None)

    # ------------------------------------------------------------------ owner
    def _check_owner(self) -> None:
        if self._owner_pid != _pid():
            raise RuntimeError("only the process that owns the SharedStore (the one "
                               "that created it, or a forked child it handed it to) may "
                               "change it; other processes may only read()")

    def adopt(self) -> None:
        """Make this process the owner: a forked child that takes the store over (the
        cache service). The parent calls :meth:`disown` and never changes it again."""
        self._owner_pid = _pid()

    def disown(self) -> None:
        """Stop owning the store: this process may still read it, no longer change it."""
        self._owner_pid = None

    # ------------------------------------------------------------------ queries

    @property
    def capacity(self) -> int:
        """Slots the owner-side arrays hold now (grows up to ``max_entries``)."""
        return self._t.capacity

    @property
    def _pool(self) -> np.ndarray:
        """int8 pool id of each slot (-1: free), owner side."""
        return self._t.pool

    def blocks_for(self, nbytes: int) -> int:
        """Blocks a record of ``nbytes`` bytes occupies when stored contiguously."""
        return -(-nbytes // self.block_bytes)

    def pool_blocks(self, pool: int) -> int:
        """Capacity of ``pool`` in blocks."""
        return self._alloc[pool].count

    def free_blocks(self, pool: int) -> int:
        """Blocks of ``pool`` free right now (retired entries not yet freed count as used)."""
        return self._alloc[pool].free_blocks

    def used_bytes(self, pool: int) -> int:
        """Exact record bytes held in ``pool`` (live and retired-not-yet-freed)."""
        return int(self._used_bytes[pool])

    def free_slot_count(self) -> int:
        """Entry slots available to :meth:`reserve`."""
        return self._t.free_count()

    def reclaimable_slots(self) -> int:
        """Free slots plus retired ones awaiting release."""
        return self._t.free_count() + self._n_retired

    def state(self, slot: int) -> int:
        """Owner-side state of ``slot`` (0 free, 1 pending, 2 live, 3 retired)."""
        return int(self._t.state[slot]) if slot < self._t.capacity else FREE

    def pool_of(self, slot: int) -> int:
        """Pool of a reserved ``slot`` (-1 if free)."""
        return int(self._t.pool[slot]) if slot < self._t.capacity else -1

    def last_use(self, slot: int) -> int:
        """Highest batch sequence number that may read ``slot`` (-1: none)."""
        return int(self._t.last_use[slot]) if slot < self._t.capacity else -1

    def generation(self, slot: int) -> int:
        """Generation the bytes of a pending or live ``slot`` carry once published."""
        return int(self._t.generations(np.array([slot]))[0])

    def generations(self, slots: np.ndarray) -> np.ndarray:
        """Vectorized :meth:`generation` (int64)."""
        return self._t.generations(slots)

    # ------------------------------------------------------------------ owner
    def reserve(self, pool: int) -> int:
        """Take a free slot in ``pool`` for a record to be written later.

        Returns:
            The slot, or -1 if all slots are taken. Its future generation is
            :meth:`generation`.
        """
        s = self.reserve_many(pool, 1)
        return int(s[0]) if len(s) else -1

    def reserve_many(self, pool: int, k: int, seq: int = -1) -> np.ndarray:
        """Reserve up to ``k`` slots in ``pool`` (fewer if slots run out), touched by
        batch ``seq`` (-1: none yet); int64 ids."""
        self._check_owner()
        if pool not in self._alloc:
            raise ValueError(f"pool={pool} is not a pool of this store; pools are "
                             f"{sorted(self._alloc)}")
        return self._t.take(min(k, self._t.free_count()), pool, seq)

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
        if self.state(slot) != PENDING:
            raise ValueError(f"slot {slot} is not pending (state {self.state(slot)}); "
                             f"reserve() it before write()")
        pool = int(self._t.pool[slot])
        if not self._put(slot, pool, data):
            return False
        self._published(np.array([slot]), np.array([pool]), len(data))
        return True

    def _put(self, slot: int, pool: int, data) -> bool:
        """Copy ``data`` into blocks of ``pool`` and publish it in the shared table.

        The owner-side state is left to :meth:`_published` (the directory batches
        it); ``slot`` must be pending in ``pool`` and the owner checked.
        """
        alloc, bb = self._alloc[pool], self.block_bytes
        n = len(data)
        need = -(-n // bb)
        if need > alloc.count or n >= 1 << 31:
            raise ValueError(
                f"record of {n} bytes is larger than pool {pool} "
                f"({alloc.count * bb} bytes usable); raise cache_bytes "
                f"(or the share of this pool) or do not cache records this large")
        head = alloc.take_run(need) if need else 0
        if head >= 0:
            off = head * bb
            self._data[off:off + n] = data if type(data) is bytes else memoryview(
                data).cast("B")
        else:
            blocks = alloc.take_blocks(chained_blocks(n, bb))
            if blocks is None:
                return False
            write_chained(self._data, bb, blocks, memoryview(data).cast("B"))
            head = ~blocks[0]
        t, i = self._slots, 3 * slot
        t[i + 1] = n
        t[i + 2] = head
        t[i] = (t[i] | 1) + 1  # publish the promise: even
        return True

    def _put_singles(self, slots: np.ndarray, pool: int, records: list,
                     sizes: np.ndarray) -> bool:
        """:meth:`_put` for records of one block each (``1 <= sizes[i] <= block``).

        One allocator walk, a numpy copy per 16 records when the records are small and
        of equal size (else one slice copy each), and the shared table written with three
        numpy stores, the generations last. False (nothing changed) if the pool has
        fewer free blocks than records.
        """
        blocks = self._alloc[pool].take_singles(len(slots))
        if blocks is None:
            return False
        bb, t = self.block_bytes, self._t
        size = int(sizes[0])
        if size < 1024 and sizes.min() == sizes.max():
            # Joined 16 records at a time: one join of a whole batch is a large
            # allocation in the calling reader thread's malloc arena, which glibc keeps
            # (benchmarks/RESULTS.md, section 3).
            grid = np.frombuffer(self._data, np.uint8, self.n_blocks * bb).reshape(
                self.n_blocks, bb)
            for lo in range(0, len(records), 16):
                grid[blocks[lo:lo + 16], :size] = np.frombuffer(
                    b"".join(records[lo:lo + 16]), np.uint8).reshape(-1, size)
            del grid
        else:
            data = self._data
            for b, rec, n in zip(blocks.tolist(), records, sizes.tolist()):
                data[b * bb:b * bb + n] = rec if type(rec) is bytes else memoryview(
                    rec).cast("B")
        t.length[slots] = sizes
        t.head[slots] = blocks
        t.gen[slots] = (t.gen[slots] | 1) + 1  # publish the promises, after the bytes
        return True

    def _published_in(self, slots: np.ndarray, pool: int, nbytes: int) -> None:
        """:meth:`_published` for slots of one ``pool`` holding ``nbytes`` in all."""
        self._t.state[slots] = LIVE
        self._used_bytes[pool] += nbytes

    def _published(self, slots: np.ndarray, pools: np.ndarray, nbytes) -> None:
        """Owner-side state of slots :meth:`_put` published (``nbytes`` per slot)."""
        self._t.state[slots] = LIVE
        np.add.at(self._used_bytes, pools, nbytes)

    def touch(self, slot: int, seq: int) -> None:
        """Record that batch ``seq`` (< 2**31) may read ``slot`` (delays its reuse)."""
        self.touch_many(np.array([slot]), seq)

    def touch_many(self, slots: np.ndarray, seq: int) -> None:
        """:meth:`touch` for an array of slots."""
        lu = self._t.last_use
        lu[slots] = np.maximum(lu[slots], seq)

    def _touch_latest(self, slots: np.ndarray, seq: int) -> None:
        """:meth:`touch_many` when ``seq`` is >= every earlier touch (the directory's
        current batch)."""
        self._t.last_use[slots] = seq
