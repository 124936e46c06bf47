"""RunAllocator: the free blocks of one pool, kept as runs threaded through free space.

A pool owns the block ids ``[first, first + count)`` of the data region. Its free blocks
form a LIFO list of *runs* (adjacent free blocks); each run's first block starts with an
8-byte header ``(length in blocks, first block of the next run or -1)``. The list lives
in memory that is free anyway, so the allocator needs no per-block metadata at all:
only a head and a counter per pool.

A record is placed in one of two layouts (see ``reader.py`` for the read side):

* **contiguous** -- ``ceil(n / block_bytes)`` adjacent blocks, copied with one slice.
  :meth:`take_run` looks for a run at least that long among the first few runs of the
  list and takes its tail, so a fresh pool and records freed and refilled at the same
  size (the common case of fixed-size samples) always stay contiguous.
* **chained** -- when no run is long enough (free space fragmented by records of
  varying size), any free blocks are used: every block but the last ends with the
  4-byte id of the next one, so a chained record needs
  ``1 + ceil((n - block_bytes) / (block_bytes - 4))`` blocks. Any free block is
  therefore usable and eviction never fails for lack of a *contiguous* hole.

Freed records go back as runs (a contiguous record is one run, a chained one is
split into its adjacent pieces). Runs are not merged with their neighbours: merging
would need per-block state, and fixed-size records never need it. Accounting is exact:
a pool never hands out more blocks than it owns, nor takes back more than it gave.
"""

from __future__ import annotations

import struct
from typing import Iterator, List, Optional, Tuple

import numpy as np

__all__ = ["RunAllocator", "chain_of", "chained_blocks", "contiguous_blocks",
           "write_chained"]

_RUN = struct.Struct("<ii")    # free-run header: length, next run (-1: end of list)
_NEXT = struct.Struct("<i")    # chained record: next block id, at the end of a block
_SEARCH = 8                    # runs examined for a contiguous fit before chaining


def contiguous_blocks(n: int, block_bytes: int) -> int:
    """Blocks a record of ``n`` bytes occupies in the contiguous layout."""
    return -(-n // block_bytes)


def chained_blocks(n: int, block_bytes: int) -> int:
    """Blocks a record of ``n`` bytes occupies in the chained layout."""
    return 1 + -(-(n - block_bytes) // (block_bytes - 4)) if n > block_bytes else 1


class RunAllocator:
    """Free-run list of one pool.

    Args:
        data: writable buffer of the whole data region (the owner's mapping).
        block_bytes: block size in bytes (>= 64).
        first: id of the pool's first block.
        count: number of blocks in the pool (>= 0).
    """

    __slots__ = ("first", "count", "free_blocks", "_head", "_data", "_bb")

    def __init__(self, data, block_bytes: int, first: int, count: int) -> None:
        self._data = data
        self._bb = block_bytes
        self.first = int(first)
        self.count = int(count)
        self.free_blocks = 0
        self._head = -1
        if count:
            self.give_runs([first], [count])

    def owns(self, block: int) -> bool:
        """Whether ``block`` belongs to this pool."""
        return self.first <= block < self.first + self.count

    def runs(self) -> Iterator[Tuple[int, int]]:
        """``(first block, length)`` of every free run, in list order (for checks)."""
        b = self._head
        while b >= 0:
            length, nxt = _RUN.unpack_from(self._data, b * self._bb)
            yield b, length
            b = nxt

    def take_run(self, k: int) -> int:
        """Take ``k`` (>= 1) adjacent blocks; return the first, or -1 if no run fits."""
        if k > self.free_blocks:
            return -1
        data, bb = self._data, self._bb
        prev = prev_len = -1
        b = self._head
        for _ in range(_SEARCH):
            if b < 0:
                return -1
            length, nxt = _RUN.unpack_from(data, b * bb)
            if length >= k:
                if length > k:  # shrink in place: the header stays, the tail goes
                    _RUN.pack_into(data, b * bb, length - k, nxt)
                elif prev < 0:
                    self._head = nxt
                else:
                    _RUN.pack_into(data, prev * bb, prev_len, nxt)
                self.free_blocks -= k
                return b + length - k
            prev, prev_len, b = b, length, nxt
        return -1

    def take_blocks(self, k: int) -> Optional[List[int]]:
        """Take any ``k`` free blocks (for a chained record); None if fewer are free."""
        if k > self.free_blocks:
            return None
        data, bb = self._data, self._bb
        out: List[int] = []
        while len(out) < k:
            b = self._head
            length, nxt = _RUN.unpack_from(data, b * bb)
            take = min(length, k - len(out))
            out.extend(range(b + length - take, b + length))
            if take == length:
                self._head = nxt
            else:
                _RUN.pack_into(data, b * bb, length - take, nxt)
        self.free_blocks -= k
        return out

    def take_singles(self, k: int) -> Optional[np.ndarray]:
        """Take ``k`` blocks for ``k`` one-block records (int64 ids); None if short.

        Walks the run list once, taking whole runs or the tail of the last one, so
        its cost is one step per run, not per block.
        """
        if k > self.free_blocks:
            return None
        data, bb = self._data, self._bb
        firsts, counts, got = [], [], 0
        while got < k:
            b = self._head
            length, nxt = _RUN.unpack_from(data, b * bb)
            take = min(length, k - got)
            firsts.append(b + length - take)
            counts.append(take)
            if take == length:
                self._head = nxt
            else:
                _RUN.pack_into(data, b * bb, length - take, nxt)
            got += take
        self.free_blocks -= k
        if len(firsts) == 1:
            return np.arange(firsts[0], firsts[0] + k, dtype=np.int64)
        counts = np.array(counts)
        starts = np.repeat(np.array(firsts, np.int64) - np.cumsum(counts) + counts, counts)
        return starts + np.arange(k)

    def give_runs(self, firsts, lengths) -> None:
        """Return runs ``[firsts[i], firsts[i] + lengths[i])`` to the pool.

        Adjacent runs given together are merged first, so records allocated side by
        side and evicted together come back as one run.
        """
        firsts = np.asarray(firsts, np.int64)
        lengths = np.asarray(lengths, np.int64)
        if not len(firsts):
            return
        if len(firsts) > 1:
            order = np.argsort(firsts)
            f, n = firsts[order], lengths[order]
            new = np.concatenate(([True], f[1:] != f[:-1] + n[:-1]))
            firsts = f[new]
            lengths = np.add.reduceat(n, np.flatnonzero(new))
        total = int(lengths.sum())
        if self.free_blocks + total > self.count:
            raise RuntimeError("block allocator: more blocks freed than allocated")
        data, bb, head = self._data, self._bb, self._head
        if len(firsts) < 16:
            for b, n in zip(firsts.tolist(), lengths.tolist()):
                _RUN.pack_into(data, b * bb, n, head)
                head = b
        else:  # one numpy scatter of all headers; run i links to run i - 1
            hdr = np.empty((len(firsts), 2), "<i4")
            hdr[:, 0] = lengths
            hdr[0, 1] = head
            hdr[1:, 1] = firsts[:-1]
            u8 = np.frombuffer(data, np.uint8)
            u8[(firsts * bb)[:, None] + np.arange(8)] = hdr.view(np.uint8).reshape(-1, 8)
            del u8
            head = int(firsts[-1])
        self._head = head
        self.free_blocks += total

    def give_blocks(self, blocks: List[int]) -> None:
        """Return the blocks of a chained record, as runs of adjacent ids."""
        if not blocks:
            return
        self.give_runs(blocks, np.ones(len(blocks), np.int64))


def write_chained(data, block_bytes: int, blocks: List[int], mv) -> None:
    """Copy record ``mv`` into ``blocks`` in the chained layout."""
    bb, pay, n = block_bytes, block_bytes - 4, len(mv)
    pos = 0
    for i, b in enumerate(blocks):
        off = b * bb
        if i + 1 < len(blocks):
            data[off:off + pay] = mv[pos:pos + pay]
            _NEXT.pack_into(data, off + pay, blocks[i + 1])
            pos += pay
        else:
            data[off:off + n - pos] = mv[pos:n]


def chain_of(data, block_bytes: int, head: int, n: int) -> List[int]:
    """Block ids of the chained record of ``n`` bytes starting at block ``head``."""
    out = [head]
    for _ in range(chained_blocks(n, block_bytes) - 1):
        out.append(_NEXT.unpack_from(data, out[-1] * block_bytes + block_bytes - 4)[0])
    return out
