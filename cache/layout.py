"""Record layouts in the data region: contiguous, or chained through any blocks.

A record of ``n`` bytes is stored in one of two layouts (the store's slot table says
which; see ``reader.py`` for the read side):

* **contiguous** -- ``ceil(n / block_bytes)`` adjacent blocks, copied with one slice.
  The allocator hands these out whenever a free run is long enough, so a fresh pool
  and records freed and refilled at one size (fixed-size samples) stay contiguous.
* **chained** -- when free space is fragmented by records of varying size, any free
  blocks are used: every block but the last ends with the 4-byte little-endian id of
  the next one, so the record needs ``1 + ceil((n - block_bytes) / (block_bytes -
  4))`` blocks. Any free block is therefore usable and eviction never fails for lack
  of a *contiguous* hole. The pointers live in the record's own blocks: the store
  keeps no per-block metadata.
"""

from __future__ import annotations

import struct
from typing import List

__all__ = ["chain_of", "chained_blocks", "contiguous_blocks", "write_chained"]

_NEXT = struct.Struct("<i")  # next block id, in the last 4 bytes of a chained block


def contiguous_blocks(n: int, block_bytes: int) -> int:
    """Blocks a record of ``n`` bytes occupies in the contiguous layout."""
    return -(-n // block_bytes)


def chained_blocks(n: int, block_bytes: int) -> int:
    """Blocks a record of ``n`` bytes occupies in the chained layout."""
    return 1 + -(-(n - block_bytes) // (block_bytes - 4)) if n > block_bytes else 1


def write_chained(data, block_bytes: int, blocks: List[int], mv) -> None:
    """Copy record ``mv`` into ``blocks`` (in order) in the chained layout."""
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
