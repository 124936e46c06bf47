"""Admission and eviction of one batch's misses (the directory's decisions).

Functions over a :class:`~impact_loader.cache.directory.CacheDirectory`, split out so
that the directory file holds the protocol and this one the room arithmetic:

* :func:`admit` -- reserve slots in a pool for distinct missed samples. Room is counted
  in *estimated records* (the running mean record size in blocks) of *free* blocks,
  pending reservations counted as taken. Retired entries do not count: their blocks
  return only when the batches that may read them are consumed, which can be after
  the reserved bytes arrive; such a reservation used to be abandoned and its sample
  read again by a worker, one request at a time. The misses claim room in the
  policy's :meth:`~CachePolicy.admit_order`; when it runs out, the policy's
  :meth:`~CachePolicy.victims` hook names entries to evict, one round per shortfall,
  until everything fits, the policy refuses, or a round frees no block (its victims
  are still read by batches in flight). When the pool is full to begin with,
  misses not above the policy's :meth:`~CachePolicy.admission_floor` are dropped in
  one comparison. Everything is numpy per round.
* :func:`evict` -- drop entries from the maps and the policy and retire them in the
  store (their space is reused only after every batch that may read them is consumed).
* :func:`admit_misses` -- route a batch's remaining misses to their pools, then to
  staging, and record the single reads the prefetcher must issue.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Optional

import numpy as np

from .codes import LOC_L, LOC_SOURCE, LOC_STAGING
from .slots import PENDING, pool_groups

if TYPE_CHECKING:  # pragma: no cover
    from .annotation import BatchBuilder
    from .directory import CacheDirectory

__all__ = ["admit", "admit_misses", "evict", "first_occurrences", "uncount_pending"]


def first_occurrences(values: np.ndarray) -> np.ndarray:
    """Positions of the first occurrence of each distinct value, in original order."""
    if len(values) < 2:
        return np.arange(len(values))
    order = values.argsort(kind="stable")
    v = values[order]
    return np.sort(order[np.concatenate(([True], v[1:] != v[:-1]))])


def admit(d: "CacheDirectory", pool: int, cand: np.ndarray, importance: np.ndarray,
          seq: int) -> np.ndarray:
    """Reserve slots in ``pool`` for the distinct uncached samples ``cand``.

    Returns:
        Bool mask over ``cand``: which were admitted.
    """
    n = len(cand)
    ok = np.zeros(n, bool)
    if not n:
        return ok
    store, policy, est, done = d.store, d.policy, d._est_blocks, 0
    staging = pool == LOC_STAGING
    floor = -np.inf if staging else policy.admission_floor(pool)
    if floor > -np.inf and _room(d, pool, est) == 0:
        # Full: only misses that beat the policy's floor can claim a victim's room.
        keep = importance > floor
        n_keep = np.count_nonzero(keep)
        if n_keep < n:
            if n_keep:
                at = keep.nonzero()[0]
                ok[at] = admit(d, pool, cand[at], importance[at], seq)
            return ok
    order = None if staging else policy.admit_order(pool, importance)
    if order is not None:
        cand, importance = cand[order], importance[order]
    slots = store._t
    while done < n:
        units = _room(d, pool, est)
        free = slots.free_count()
        room = min(units, free, n - done)
        if room > 0:
            _reserve(d, pool, cand[done:done + room], importance[done:done + room], seq)
            done += room
            continue
        if staging:
            break
        if units > 0:  # short of slots, not of bytes
            if store.reclaimable_slots() > free:
                break  # retired slots come back with release()
            want = 1
        else:
            want = n - done  # each victim frees about one estimated record
        victims = policy.victims(pool, importance[done:done + want], want)
        if not len(victims):
            break
        free_before = store.free_blocks(pool)
        evict(d, victims, forgotten=True, pool=pool)
        if store.free_blocks(pool) == free_before:
            break  # the victims are still read by batches in flight: room comes later
    if order is None:
        ok[:done] = True
    else:
        ok[order[:done]] = True
    return ok


def _room(d: "CacheDirectory", pool: int, est: int) -> int:
    """Records of ``est`` blocks that fit the free blocks of ``pool`` beside its pending
    reservations. Retired entries do not count: their blocks return only once the
    batches that may read them are consumed, possibly after this reservation's bytes
    arrive (which would then be abandoned and read again by a worker)."""
    return max((d.store.free_blocks(pool) - d._pending[pool] * est) // est, 0)


def _reserve(d: "CacheDirectory", pool: int, cand: np.ndarray, importance: np.ndarray,
             seq: int) -> None:
    store = d.store
    slots = store.reserve_many(pool, len(cand), seq)
    if store.capacity > len(d._index_of):
        d._sync_capacity()
    d._slot_of[cand] = slots
    d._index_of[slots] = cand
    d._pending[pool] += len(slots)
    d._watch.add(slots, seq)
    if pool != LOC_STAGING:
        d.policy.inserted(slots, pool, importance, cand)
        d.counts["admitted"] += len(slots)


def evict(d: "CacheDirectory", slots, forgotten: bool = False,
          pool: Optional[int] = None) -> None:
    """Evict (or abandon) distinct entries ``slots``: maps, policy, then deferred free.

    ``forgotten``: the slots came from the policy's ``victims`` hook, which already
    dropped them from its order, so ``removed`` is not called. ``pool``: every slot
    is known to be in this pool.
    """
    slots = np.asarray(slots, np.int64)
    if not len(slots):
        return
    d._slot_of[d._index_of[slots]] = -1  # a slot with no sample writes the spare cell
    d._index_of[slots] = -1
    t = d.store._t
    pending = t.state[slots] == PENDING
    n_pending = np.count_nonzero(pending)
    if n_pending:
        uncount_pending(d, t.pool[slots[pending]] if pool is None else pool, n_pending)
    if not forgotten:
        d.policy.removed(slots)
    d.store.retire_many(slots, current=True, pool=pool)
    d.counts["evicted"] += len(slots)


def uncount_pending(d: "CacheDirectory", pools, n: int) -> None:
    """``n`` reservations are no longer pending: all in pool ``pools`` (an int), or one
    in ``pools[i]`` each (an array of ``n`` pool ids)."""
    for p, mine in pool_groups(pools):
        d._pending[p] -= n if mine is None else int(np.count_nonzero(mine))


def admit_misses(d: "CacheDirectory", b: "BatchBuilder") -> None:
    """Admit the batch's unserved misses to their pools, then to staging."""
    rest = (b.slot < 0).nonzero()[0]
    if not len(rest):
        return
    pools = d.policy.route(b.tier[rest])
    if isinstance(pools, (int, np.integer)):  # one pool for every tier
        if pools != LOC_SOURCE:
            _admit_positions(d, b, rest, int(pools))
    else:
        for pool in sorted(set(pools.tolist()) - {LOC_SOURCE}):
            _admit_positions(d, b, rest[pools == pool], pool)
    if d._staging:
        rest = (b.slot < 0).nonzero()[0]
        if len(rest):
            d.counts["staged"] += _admit_positions(d, b, rest, LOC_STAGING)


def _admit_positions(d: "CacheDirectory", b: "BatchBuilder", pos: np.ndarray,
                     pool: int) -> int:
    all_pos = pos
    j = all_j = b.idx[pos]
    free = d._slot_of[j] < 0  # a sample given a slot earlier in the batch is served
    if np.count_nonzero(free) < len(free):
        pos, j = pos[free], j[free]
    # Distinct samples, first occurrence first: each position writes its code into
    # the (free) map entry of its sample in reverse order, so the first one stays.
    so, code = d._slot_of, -2 - np.arange(len(j), dtype=np.int32)
    so[j[::-1]] = code[::-1]
    first_at = so[j] == code
    so[j] = -1
    first = pos[first_at] if np.count_nonzero(first_at) < len(j) else pos
    uj = b.idx[first]
    ok = admit(d, pool, uj, b.imp[first], b.seq)
    if pool != LOC_L and np.count_nonzero(ok):
        b.add_reads(first[ok], uj[ok], uj[ok] + 1, pool)
    b.slot[all_pos] = d._slot_of[all_j]
    return int(np.count_nonzero(ok))
