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

Entries and generations (seqlock):
    Entry slot ``s`` has a shared generation ``gen[s]``: odd while the slot is free or
    being written, even once its bytes are published. The owner reserves a slot (the
    generation the bytes *will* carry is ``gen[s] + 1``), writes the bytes, then
    publishes by storing that even value. Freeing stores an odd value *before* the
    blocks return to the allocator. A reader given ``(slot, generation)`` checks the
    generation before and after copying, and the length bounds; on any mismatch it
    returns ``None`` (a miss: read the source) and never wrong bytes. Ordering relies on
    stores and loads to the shared mapping being performed in program order, which
    holds on x86-64 (TSO); weakly ordered CPUs would need fences Python cannot issue.

Deferred free:
    ``retire(slot)`` removes an entry logically. Its blocks are freed only once the
    owner reports, through ``release(seq)``, that every batch up to ``seq`` that
    referenced the entry (``touch(slot, seq)``) is consumed.

Only the creating process may change the store; any process may :meth:`read`.
"""

from __future__ import annotations

import os
from array import array
from typing import Optional, Sequence, Tuple

import numpy as np

from .allocator import BlockAllocator
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
_CONTIG = 1 << 31
_LOW31 = _CONTIG - 1


class SharedStore:
    """Variable-size records in fixed-size blocks of a shared memory region.

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

    def _map(self) -> None:
        meta = memoryview(self._region.meta)
        self._data = memoryview(self._region.data)
        self._slots = meta[:16 * self.max_entries].cast("q")
        self._next = meta[16 * self.max_entries:].cast("i")
        meta.release()

    # ------------------------------------------------------------------ readers
    def read(self, slot: int, generation: int) -> Optional[bytes]:
        """Copy out the bytes of entry ``slot`` if it still carries ``generation``.

        Safe in any process attached to the store, concurrently with the owner.

        Args:
            slot: entry slot from the cache directory's annotation.
            generation: generation the annotation expects (even).

        Returns:
            The record bytes, or None if the entry is absent, being written, reused or
            inconsistent (the caller reads the source instead).
        """
        if not 0 <= slot < self.max_entries:
            return None
        slots = self._slots
        g = slots[2 * slot]
        if g != generation or g & 1:
            return None
        w = slots[2 * slot + 1]
        n = w >> 32
        first = w & _LOW31
        bb = self.block_bytes
        if n < 0 or first >= self.n_blocks:
            return None
        if w & _CONTIG:
            off = first * bb
            if off + n > self.region_bytes:
                return None
            out = self._data[off:off + n].tobytes()
        else:
            parts = []
            b, rest, nxt, nb = first, n, self._next, self.n_blocks
            while rest > 0:
                if not 0 <= b < nb:
                    return None
                take = bb if rest > bb else rest
                parts.append(self._data[b * bb:b * bb + take])
                rest -= take
                b = nxt[b]
            out = b"".join(parts)
        if slots[2 * slot] != g:
            return None
        return out

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
        g = self._slots[2 * slot]
        pool = self._pool[slot]
        # Odd generation first: readers of the old bytes see the change and miss. A
        # never-published slot skips the generation its reservation promised.
        self._slots[2 * slot] = g + 2 if g & 1 else g + 1
        if not g & 1:  # published: give its blocks back
            n = self._slots[2 * slot + 1] >> 32
            need = self.blocks_for(n)
            if self._state[slot] == RETIRED:
                self._retired_blocks[pool] -= need
            if need:
                self._alloc[pool].free(self.entry_blocks(slot))
            self._used_bytes[pool] -= n
        self._state[slot] = FREE
        self._pool[slot] = -1
        self._free_slots[self._n_free_slots] = slot
        self._n_free_slots += 1

    def entry_blocks(self, slot: int) -> list:
        """Block ids of live or retired ``slot`` in chain order (for checks and tests)."""
        w = self._slots[2 * slot + 1]
        need = self.blocks_for(w >> 32)
        b = w & _LOW31
        if w & _CONTIG:
            return list(range(b, b + need))
        out = []
        for _ in range(need):
            out.append(b)
            b = self._next[b]
        return out

    # ------------------------------------------------------------------ lifetime
    def close(self) -> None:
        """Unmap the region; the owner also closes its descriptors. Idempotent."""
        for name in ("_data", "_slots", "_next"):
            mv = self.__dict__.pop(name, None)
            if mv is not None:
                mv.release()
        region = self.__dict__.get("_region")
        if region is not None:
            region.close()

    @property
    def closed(self) -> bool:
        """Whether :meth:`close` was called."""
        return "_data" not in self.__dict__

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:  # noqa: BLE001 - interpreter shutdown; nothing to report to
            pass

    def __enter__(self) -> "SharedStore":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __reduce__(self):
        if self.closed:
            raise ValueError("cannot share a closed SharedStore")
        return (_attach, (self._region, self.region_bytes, self.block_bytes,
                          self.n_blocks, self.max_entries))


def _attach(region: SharedRegion, region_bytes: int, block_bytes: int, n_blocks: int,
            max_entries: int) -> SharedStore:
    """Rebuild a read-only view of a store in another process (pickle hook)."""
    store = SharedStore.__new__(SharedStore)
    store._owner_pid = None
    store._region = region
    store.region_bytes = region_bytes
    store.block_bytes = block_bytes
    store.n_blocks = n_blocks
    store.max_entries = max_entries
    store._map()
    return store
