"""Placement of fetched bytes into reserved slots: :meth:`CacheDirectory.fill`.

Only indices with a *pending* reservation are stored; bytes of anything else (already
cached, evicted, abandoned, never admitted) are ignored, so a package run may include
cached samples. Records of at most one block each -- the common case: the dataset
sizes blocks to hold one fixed-size record -- are placed together per pool
(``SharedStore._put_singles``: one allocator walk, one numpy copy, three numpy stores
into the shared table). Larger records, or a pool short of free blocks, go one by one
(``SharedStore._put``): a record that does not fit evicts through the policy's
``victims`` hook, or its reservation is abandoned and the worker reads the source.
Bytes are never over budget: each pool has a fixed block count.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Optional

import numpy as np

from .admission import evict, first_occurrences, uncount_pending
from .checks import fill_indices
from .codes import LOC_STAGING
from .slots import PENDING, pool_groups

if TYPE_CHECKING:  # pragma: no cover
    from .directory import CacheDirectory

__all__ = ["fill"]

_BULK = 4  # fewest one-block records placed together


def fill(d: "CacheDirectory", indices, records) -> int:
    """Store ``records[i]`` for ``indices[i]`` where a reservation awaits it.

    Returns:
        Number of records stored.

    Raises:
        ValueError: lengths differ, an index is out of range, or a record is larger
            than the pool it was admitted to.
    """
    idx = fill_indices(indices, len(records), d.n_samples)
    store, t = d.store, d.store._t
    slots = d._slot_of[idx].astype(np.int64)
    at = (slots >= 0).nonzero()[0]
    at = at[t.state[slots[at]] == PENDING]
    if not len(at):
        return 0
    if len(at) > 1 and not (isinstance(indices, range) and indices.step > 0):
        at = at[first_occurrences(slots[at])]  # an index given twice is stored once
    slots = slots[at]
    store._check_owner()
    recs = [records[k] for k in at.tolist()]
    sizes = np.fromiter(map(len, recs), np.int64, len(recs))
    pools = t.pool[slots]
    placed = 0
    if len(recs) >= _BULK and 0 < sizes.min() and sizes.max() <= store.block_bytes:
        for p, mine in pool_groups(pools):
            if mine is None:
                s, r, z = slots, recs, sizes
            else:
                keep = mine.nonzero()[0]
                s, r, z = slots[keep], [recs[i] for i in keep.tolist()], sizes[keep]
            if store._put_singles(s, p, r, z):
                placed += _account(d, s, z, p)
            else:
                placed += _one_by_one(d, s, r, z)
    else:
        placed = _one_by_one(d, slots, recs, sizes)
    if placed:
        d._size_n += placed
        d._est_blocks = max(1, store.blocks_for(int(math.ceil(d._size_sum / d._size_n))))
        d.counts["filled"] += placed
    return placed


def _account(d: "CacheDirectory", slots, sizes, pool: Optional[int] = None) -> int:
    """Owner-side bookkeeping of published ``slots`` (``sizes`` bytes each; ``pool``:
    known to hold every slot)."""
    if not len(slots):
        return 0
    slots = np.asarray(slots, np.int64)
    sizes = np.asarray(sizes, np.int64)
    total = sum(sizes.tolist())
    if pool is None:
        pool = d.store._t.pool[slots]
        d.store._published(slots, pool, sizes)
    else:
        d.store._published_in(slots, pool, total)
    uncount_pending(d, pool, len(slots))
    d._size_sum += total
    return len(slots)


def _one_by_one(d: "CacheDirectory", slots, recs: list, sizes) -> int:
    store = d.store
    done, done_sizes, placed = [], [], 0
    try:
        for slot, pool, rec, n in zip(slots.tolist(), store._t.pool[slots].tolist(),
                                      recs, sizes.tolist()):
            if not store._put(slot, pool, rec):
                placed += _account(d, done, done_sizes)  # eviction reads owner state
                done, done_sizes = [], []
                if not _make_room(d, slot, pool, rec):
                    continue
            done.append(slot)
            done_sizes.append(n)
    finally:  # a record too large for its pool raises: what was placed still counts
        placed += _account(d, done, done_sizes)
    return placed


def _make_room(d: "CacheDirectory", slot: int, pool: int, rec) -> bool:
    """Evict until ``rec`` fits its pending ``slot``; abandon it if that fails."""
    store = d.store
    while True:
        if pool == LOC_STAGING or store.reclaimable_blocks(pool) >= store.blocks_for(
                len(rec)):
            victims = np.empty(0, np.int64)  # space comes back with release()
        else:
            victims = d.policy.victims(pool, np.full(1, np.inf), 1)
        if not len(victims) or slot in victims:
            evict(d, victims[victims != slot], forgotten=True)
            evict(d, np.array([slot], np.int64), forgotten=slot in victims)
            d.counts["abandoned"] += 1
            return False
        evict(d, victims, forgotten=True)
        if store._put(slot, pool, rec):
            return True
