"""RunAllocator: the free blocks of one pool, as a stack of free runs in numpy arrays.

A pool owns the block ids ``[first, first + count)`` of the data region. Its free blocks
are kept as *runs* (adjacent free blocks): two int32 arrays, first block and length, used
as a stack whose top holds the most recently freed runs. Nothing is stored per block;
the arrays hold one entry per free run (8 bytes), grow when more runs are free and
shrink again when few are (a full cache has few free runs).

* :meth:`take_run` -- ``k`` adjacent blocks for a contiguous record (``layout.py``):
  the topmost of the last few runs that is long enough gives its tail.
* :meth:`take_singles` / :meth:`take_blocks` -- ``k`` blocks in any order (one-block
  records, or a chained record): whole runs from the top, then the tail of the next,
  found with one cumulative sum; the cost does not grow with the number of runs.
* :meth:`give_runs` -- freed records come back as runs; runs freed together that touch
  are merged first, so records allocated side by side and evicted together come back
  as one run. (Runs are not merged with older free runs: that would need per-block
  state, and fixed-size records never need it.)

Accounting is exact: a pool never hands out more blocks than it owns, nor takes back
more than it gave.
"""

from __future__ import annotations

from typing import Iterator, List, Optional, Tuple

import numpy as np

__all__ = ["RunAllocator"]

_SEARCH = 8  # topmost runs examined for a contiguous fit before chaining


class RunAllocator:
    """Free-run stack of one pool.

    Args:
        first: id of the pool's first block.
        count: number of blocks in the pool (>= 0).
    """

    __slots__ = ("first", "count", "free_blocks", "_start", "_len", "_n")

    def __init__(self, first: int, count: int) -> None:
        self.first = int(first)
        self.count = int(count)
        self.free_blocks = 0
        self._start = np.empty(16, np.int32)
        self._len = np.empty(16, np.int32)
        self._n = 0
        if count:
            self.give_runs(np.array([first]), np.array([count]))

    @property
    def nbytes(self) -> int:
        """Bytes of the run arrays (this allocator's whole metadata)."""
        return self._start.nbytes + self._len.nbytes

    def owns(self, block: int) -> bool:
        """Whether ``block`` belongs to this pool."""
        return self.first <= block < self.first + self.count

    def runs(self) -> Iterator[Tuple[int, int]]:
        """``(first block, length)`` of every free run, top of the stack first."""
        n = self._n
        return zip(self._start[:n][::-1].tolist(), self._len[:n][::-1].tolist())

    def take_run(self, k: int) -> int:
        """Take ``k`` (>= 1) adjacent blocks; return the first, or -1 if no run fits."""
        n = self._n
        if k > self.free_blocks or not n:
            return -1
        top = n - 1
        if self._len[top] < k:  # not the top run: the topmost long enough one nearby
            lo = max(0, n - _SEARCH)
            fit = (self._len[lo:n] >= k).nonzero()[0]
            if not len(fit):
                return -1
            top = lo + int(fit[-1])
        start, length = int(self._start[top]), int(self._len[top])
        if length > k:
            self._len[top] = length - k  # take the tail; the run keeps its start
        else:  # used up: the last run moves into its place
            self._n = n - 1
            self._start[top] = self._start[n - 1]
            self._len[top] = self._len[n - 1]
        self.free_blocks -= k
        return start + length - k

    def take_singles(self, k: int) -> Optional[np.ndarray]:
        """Take any ``k`` blocks (int64 ids, adjacent ones ascending); None if short."""
        if k > self.free_blocks:
            return None
        if not k:
            return np.empty(0, np.int64)
        n, w = self._n, min(self._n, max(16, k))
        while True:  # a window from the top, widened until it holds k blocks
            lens = self._len[n - w:n][::-1].astype(np.int64)
            cum = np.cumsum(lens)
            if cum[-1] >= k or w == n:
                break
            w = min(n, 4 * w)
        j = int(np.searchsorted(cum, k))  # runs 0..j-1 whole, run j (partly or whole)
        starts = self._start[n - w:n][::-1][:j + 1].astype(np.int64)
        counts = lens[:j + 1].copy()
        counts[j] = k - (cum[j - 1] if j else 0)
        if counts[j] == lens[j]:
            self._n = n - (j + 1)
        else:  # the tail of run j is taken; the run keeps its start
            self._n = n - j
            self._len[n - j - 1] = lens[j] - counts[j]
            starts[j] += lens[j] - counts[j]
        self.free_blocks -= k
        first = np.repeat(starts - np.cumsum(counts) + counts, counts)
        return first + np.arange(k)

    def take_blocks(self, k: int) -> Optional[List[int]]:
        """Take any ``k`` free blocks (for a chained record); None if fewer are free."""
        got = self.take_singles(k)
        return None if got is None else got.tolist()

    def give_runs(self, firsts, lengths) -> None:
        """Return runs ``[firsts[i], firsts[i] + lengths[i])`` to the pool."""
        m = len(firsts)
        if not m:
            return
        firsts = np.asarray(firsts, np.int64)
        lengths = np.asarray(lengths, np.int64)
        total = sum(lengths.tolist())
        if self.free_blocks + total > self.count:
            raise RuntimeError("block allocator: more blocks freed than allocated")
        if m > 1:  # merge runs that touch (records freed together)
            order = firsts.argsort()
            f, n = firsts[order], lengths[order]
            touch = f[1:] == f[:-1] + n[:-1]
            if np.count_nonzero(touch):
                new = np.concatenate(([True], ~touch))
                firsts = f[new]
                lengths = np.add.reduceat(n, new.nonzero()[0])
                m = len(firsts)
            else:
                firsts, lengths = f, n
        n = self._n
        if n + m > len(self._start):
            self._resize(max(2 * len(self._start), n + m))
        self._start[n:n + m] = firsts
        self._len[n:n + m] = lengths
        self._n = n + m
        self.free_blocks += total
        if len(self._start) > 64 and 4 * self._n < len(self._start):
            self._resize(max(64, 2 * self._n))

    def give_blocks(self, blocks: List[int]) -> None:
        """Return single blocks (of a chained record), as runs of adjacent ids."""
        self.give_runs(blocks, np.ones(len(blocks), np.int64))

    def _resize(self, size: int) -> None:
        n = self._n
        start, length = np.empty(size, np.int32), np.empty(size, np.int32)
        start[:n], length[:n] = self._start[:n], self._len[:n]
        self._start, self._len = start, length
