"""BlockAllocator: hands out fixed-size blocks of one pool of the shared region.

A record of ``n`` bytes takes ``ceil(n / block_bytes)`` blocks. Blocks of one record
need not be adjacent: the store chains them (a ``next`` table in shared memory), so any
freed block is reusable and eviction never fails for lack of a *contiguous* hole. The
free blocks sit on a LIFO stack (a numpy int32 array) ordered so that a fresh pool and
a just-freed record hand out ascending runs; most records therefore land in adjacent
blocks and readers copy them with one slice. Accounting is exact: the allocator knows
every block's owner count (free or not) and never hands out more than it owns.
"""

from __future__ import annotations

from typing import Optional

import numpy as np

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
        self._stack = np.arange(first + count - 1, first - 1, -1, dtype=np.int32)
        self._top = self.count

    @property
    def free_blocks(self) -> int:
        """Blocks currently free."""
        return self._top

    def alloc(self, n: int) -> Optional[np.ndarray]:
        """Take ``n`` blocks; return their ids (int32, in chain order) or None if short."""
        if n > self._top:
            return None
        top = self._top
        blocks = self._stack[top - n:top][::-1].copy()
        self._top = top - n
        return blocks

    def free(self, blocks: np.ndarray) -> None:
        """Return ``blocks`` (as handed out by :meth:`alloc`) to the pool."""
        n = len(blocks)
        if self._top + n > self.count:
            raise RuntimeError("block allocator: more blocks freed than allocated")
        self._stack[self._top:self._top + n] = blocks[::-1]
        self._top += n

    def owns(self, block: int) -> bool:
        """Whether ``block`` belongs to this pool."""
        return self.first <= block < self.first + self.count
