"""BlockAllocator: hands out fixed-size blocks of one pool of the shared region.

A record of ``n`` bytes takes ``ceil(n / block_bytes)`` blocks. Blocks of one record
need not be adjacent: the store chains them (a ``next`` table in shared memory), so any
freed block is reusable and eviction never fails for lack of a *contiguous* hole. The
free blocks sit on a LIFO stack (an ``array('i')``, 4 bytes per block) ordered so that
a fresh pool and a just-freed record hand out ascending runs; most records therefore
land in adjacent blocks and readers copy them with one slice. Accounting is exact: the
allocator never hands out more blocks than it owns, nor takes back more than it gave.
"""

from __future__ import annotations

from array import array
from typing import List, Optional

__all__ = ["BlockAllocator"]


class BlockAllocator:
    """Free-block stack over the block ids ``[first, first + count)``.

    Args:
        first: id of the pool's first block.
        count: number of blocks in the pool (>= 0).
    """

    __slots__ = ("first", "count", "_stack", "_top")

    def __init__(self, first: int, count: int) -> None:
        self.first = int(first)
        self.count = int(count)
        # Popping from the top yields first, first+1, ...
        self._stack = array("i", range(first + count - 1, first - 1, -1))
        self._top = self.count

    @property
    def free_blocks(self) -> int:
        """Blocks currently free."""
        return self._top

    def alloc(self, n: int) -> Optional[List[int]]:
        """Take ``n`` blocks; return their ids in chain order, or None if short."""
        top = self._top
        if n > top:
            return None
        if n == 1:
            self._top = top - 1
            return [self._stack[top - 1]]
        blocks = self._stack[top - n:top].tolist()
        blocks.reverse()
        self._top = top - n
        return blocks

    def free(self, blocks: List[int]) -> None:
        """Return ``blocks`` (as handed out by :meth:`alloc`) to the pool."""
        n, top = len(blocks), self._top
        if top + n > self.count:
            raise RuntimeError("block allocator: more blocks freed than allocated")
        if n == 1:
            self._stack[top] = blocks[0]
            self._top = top + 1
            return
        self._stack[top:top + n] = array("i", reversed(blocks))
        self._top = top + n

    def owns(self, block: int) -> bool:
        """Whether ``block`` belongs to this pool."""
        return self.first <= block < self.first + self.count
