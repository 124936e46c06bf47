"""CacheDirectory: which sample is where; decides admissions and substitutions.

It lives in the main process (inside the sampler) and owns the :class:`SharedStore`, the
index<->slot maps and the chosen policy. The protocol, per batch ``seq`` (0, 1, 2, ...):

1. **Plan** -- ``a = directory.annotate(indices, tier, importance, seq=seq)`` with the
   batch's numpy arrays (``TIER_NONE`` for uniform plans). Hits get their slot and
   generation; a missed L-sample may get a substitute (``a.indices`` reports it);
   misses the policy admits get a reserved slot (evicting through the policy's
   ``victim`` hook); L-refills schedule a whole package. ``a.reads`` lists the storage
   reads in plan order: single indices and ``(start, stop)`` package runs.
2. **Prefetch** (main process; the directory is not thread-safe, so prefetch threads
   call it under one lock) -- for each ``(start, stop)`` in ``a.reads``:
   ``directory.fill(range(start, stop), source.read_many(range(start, stop)))``; the
   single reads may also be gathered, ``s = a.reads.singles``:
   ``directory.fill(s, source.read_many(s))``. Bytes for indices with no pending slot
   are ignored, so a package run may include already cached samples.
3. **Read** (DataLoader workers, any process) -- ``store.read(slot, generation)`` for
   each item whose ``location`` is not ``LOC_SOURCE``; ``None`` means: read the source.
   Annotations become valid as their fills land; before that, reads are misses.
4. **Consume** -- once the training loop has received batch ``seq``:
   ``directory.release(seq)``. Evicted entries are freed only after every batch that
   could read them is released; reservations whose bytes never came are abandoned.
5. **Epoch boundary** -- ``directory.new_epoch()`` (swaps the H shadow heap, renews
   the substitutes); ``update_importance(indices, importance)`` any time.

Admission works on an estimate of the record size (running mean of filled records;
one block before the first fill). ``fill`` does the exact accounting: if the record
does not fit, it evicts through the same hook, or abandons the reservation (the worker
then reads the source). Bytes are never over budget: each pool has a fixed block count.

Memory: 4 bytes per dataset sample (index->slot) and 4 per slot (slot->index), plus the
store's and the policy's per-slot arrays. Batch sequence numbers must stay < 2**31.
"""

from __future__ import annotations

import math
from array import array
from collections import deque

import numpy as np

from .annotation import Annotation, Reads
from .base import CachePolicy
from .checks import check_plan
from .codes import LOC_L, LOC_SOURCE, LOC_STAGING, TIER_L
from .config import CacheConfig
from .registry import make_policy
from .store import LIVE, PENDING, SharedStore

__all__ = ["CacheDirectory"]


class CacheDirectory:
    """The sampler's view of the node cache (main process only).

    Args:
        n_samples: samples in the dataset (indices ``0 .. n_samples-1``).
        config: a :class:`CacheConfig` (default: ``CacheConfig()``, caching off).

    Raises:
        ValueError: ``n_samples`` is not a positive int.
    """

    def __init__(self, *, n_samples: int, config: CacheConfig = None) -> None:
        if isinstance(n_samples, bool) or not isinstance(n_samples, int) \
                or not 1 <= n_samples < 1 << 31:
            raise ValueError(f"n_samples={n_samples!r} must be an int in [1, 2**31) "
                             f"(the dataset length)")
        self.config = config = config if config is not None else CacheConfig()
        self.n_samples = n_samples
        n_blocks = config.region_bytes // config.block_bytes
        capacity = config.max_entries or max(n_blocks, 1)
        self.policy = make_policy(config, capacity, n_samples)
        pools = list(self.policy.pools())
        if config.staging_bytes:
            pools.append((LOC_STAGING, config.staging_bytes))
        self.store = SharedStore(pools=pools, block_bytes=config.block_bytes,
                                 max_entries=capacity)
        self._pools = [p for p, _ in pools]
        # Skip the L-cache hooks for policies that do not implement them (hot loop).
        kind = type(self.policy)
        self._l_hooks = (kind.substitute is not CachePolicy.substitute
                         or kind.package is not CachePolicy.package)
        self._slot_of = array("i", [-1]) * n_samples
        self._index_of = array("i", [-1]) * capacity
        self._pending = {p: 0 for p in self._pools}
        self._watch = deque()  # (slot, seq) of pending and staged entries
        self._est_blocks = 1
        self._size_sum = self._size_n = 0
        self._seq = -1
        self.epoch = 0
        self.counts = dict.fromkeys(("planned", "hits", "substitutions", "admitted",
                                     "evicted", "filled", "abandoned", "staged"), 0)

    # ------------------------------------------------------------------ plan
    def annotate(self, indices, tier=None, importance=None, *, seq: int) -> Annotation:
        """Annotate one batch of the plan, in plan order (see the module docstring).

        Args:
            indices: planned sample indices (int array-like).
            tier: ``TIER_*`` per index (default all ``TIER_NONE``).
            importance: float importance per index (default 0).
            seq: batch sequence number, non-decreasing across calls.

        Returns:
            The :class:`Annotation` (with the :class:`Reads` to issue).

        Raises:
            ValueError: lengths differ, an index is out of range, a tier is unknown, an
                importance is NaN, or ``seq`` went backwards.
        """
        idx, tier, imp = check_plan(indices, tier, importance, seq, self._seq, self.n_samples)
        self._seq = seq
        policy, store, slot_of, index_of = (self.policy, self.store, self._slot_of,
                                            self._index_of)
        staging = LOC_STAGING in self._pending
        l_hooks = self._l_hooks
        reads = ([], [], [])
        out_idx, out_slot, out_gen, out_loc, out_hit, out_sub = [], [], [], [], [], []
        for j, t, w in zip(idx.tolist(), tier.tolist(), imp.tolist()):
            s = slot_of[j]
            delivered, hit, sub = j, s >= 0, False
            if s >= 0:
                store.touch(s, seq)
                policy.hit(s, w, j)
            else:
                s = policy.substitute(j, t) if l_hooks else -1
                if s >= 0:
                    # Touch at once: a package loaded below must not reuse this slot.
                    store.touch(s, seq)
                    delivered, hit, sub = index_of[s], True, True
                    policy.hit(s, math.nan, delivered)
                run = policy.package(j, t) if l_hooks else None
                if run is not None:
                    self._load_package(run[0], run[1], seq, reads)
                if s < 0:
                    s = slot_of[j]
                    if s >= 0:
                        store.touch(s, seq)
                        policy.hit(s, w, j)
                    else:
                        pool = policy.route(t)
                        if pool != LOC_SOURCE:
                            s = self._admit(j, pool, w, seq, reads)
                        if s < 0 and staging:
                            s = self._admit(j, LOC_STAGING, w, seq, reads)
                            if s >= 0:
                                self.counts["staged"] += 1
            out_idx.append(delivered)
            out_slot.append(s)
            if s >= 0:
                out_gen.append(store.generation(s))
                out_loc.append(store.pool_of(s))
            else:
                out_gen.append(-1)
                out_loc.append(LOC_SOURCE)
            out_hit.append(hit)
            out_sub.append(sub)
        slot = np.array(out_slot, np.int64)
        loc = np.array(out_loc, np.int8)
        gen = np.array(out_gen, np.int64)
        hit = np.array(out_hit, bool)
        sub = np.array(out_sub, bool)
        self.counts["planned"] += len(idx)
        self.counts["hits"] += int(hit.sum())
        self.counts["substitutions"] += int(sub.sum())
        return Annotation(planned=idx, indices=np.array(out_idx, np.int64), tier=tier,
                          location=loc, slot=slot, generation=gen, hit=hit,
                          substituted=sub, reads=Reads(*reads), seq=seq)

    def lookup(self, index: int, *, tier: int = TIER_L):
        """Query one sample without admitting anything.

        A cached sample is returned as is; a missed L-sample gets a substitute (marked
        used for this epoch) when the policy substitutes.

        Returns:
            ``(delivered_index, location, slot, generation)`` or None on a miss.
        """
        idx, tier_arr, _ = check_plan([index], [tier], None, max(self._seq, 0), self._seq,
                                         self.n_samples)
        j = int(idx[0])
        s = self._slot_of[j]
        if s >= 0:
            self.policy.hit(s, math.nan, j)
        else:
            s = self.policy.substitute(j, int(tier_arr[0]))
            if s < 0:
                return None
            j = self._index_of[s]
            self.policy.hit(s, math.nan, j)
        return j, self.store.pool_of(s), s, self.store.generation(s)

    def _admit(self, j: int, pool: int, w: float, seq: int, reads) -> int:
        store, need = self.store, self._est_blocks
        # Retired entries count as room: release() frees them before most fills land.
        while store.reclaimable_slots() == 0 or (
                store.reclaimable_blocks(pool) - self._pending[pool] * need < need):
            v = self.policy.victim(pool, w) if pool != LOC_STAGING else -1
            if v < 0:
                return -1
            self._evict(v)
        s = store.reserve(pool)
        if s < 0:  # every slot is retired, waiting for release()
            return -1
        self._pending[pool] += 1
        self._slot_of[j] = s
        self._index_of[s] = j
        store.touch(s, seq)
        self._watch.append((s, seq))
        if pool != LOC_STAGING:
            self.policy.inserted(s, pool, w, j)
            self.counts["admitted"] += 1
        if pool != LOC_L:
            reads[0].append(j)
            reads[1].append(j + 1)
            reads[2].append(pool)
        return s

    def _load_package(self, start: int, stop: int, seq: int, reads) -> None:
        first = last = -1
        for j in range(start, stop):
            if self._slot_of[j] >= 0:
                continue
            if self._admit(j, LOC_L, -math.inf, seq, reads) < 0:
                break
            if first < 0:
                first = j
            last = j
        if first >= 0:
            reads[0].append(first)
            reads[1].append(last + 1)
            reads[2].append(LOC_L)

    def _evict(self, s: int) -> None:
        j = self._index_of[s]
        if j >= 0 and self._slot_of[j] == s:
            self._slot_of[j] = -1
        self._index_of[s] = -1
        if self.store.state(s) == PENDING:
            self._pending[self.store.pool_of(s)] -= 1
        self.policy.removed(s)
        self.store.retire(s)
        self.counts["evicted"] += 1

    # ------------------------------------------------------------------ bytes
    def fill(self, indices, records) -> int:
        """Place bytes read from storage into their reserved slots.

        Args:
            indices: sample indices (e.g. ``range(start, stop)`` of a read run).
            records: the raw bytes of each index, in the same order.

        Returns:
            Number of records stored; bytes of indices with no pending reservation
            (already cached, evicted, abandoned) are ignored.

        Raises:
            ValueError: lengths differ, an index is out of range, or a record is larger
                than the pool it was admitted to.
        """
        indices = indices.tolist() if isinstance(indices, np.ndarray) else list(indices)
        if len(indices) != len(records):
            raise ValueError(f"fill got {len(indices)} indices but {len(records)} "
                             f"records; pass one record per index")
        store, placed = self.store, 0
        for j, rec in zip(indices, records):
            if not 0 <= j < self.n_samples:
                raise ValueError(f"index {j} is out of range for n_samples="
                                 f"{self.n_samples}; pass indices from the annotation")
            s = self._slot_of[j]
            if s < 0 or store.state(s) != PENDING:
                continue
            pool = store.pool_of(s)
            while not store.write(s, rec):
                if store.reclaimable_blocks(pool) >= store.blocks_for(len(rec)):
                    v = -1  # space is coming back with release(); do not evict more
                else:
                    v = self.policy.victim(pool, math.inf) if pool != LOC_STAGING else -1
                if v < 0 or v == s:
                    self._evict(s)
                    self.counts["abandoned"] += 1
                    break
                self._evict(v)
            else:
                self._pending[pool] -= 1
                placed += 1
                self._size_sum += len(rec)
                self._size_n += 1
        if placed:
            mean = self._size_sum / self._size_n
            self._est_blocks = max(1, store.blocks_for(int(math.ceil(mean))))
            self.counts["filled"] += placed
        return placed

    def put(self, index: int, data) -> bool:
        """Store the bytes of one pending ``index``; returns whether they were stored."""
        return self.fill([index], [data]) == 1

    # ------------------------------------------------------------------ progress
    def release(self, seq: int) -> None:
        """Batch ``seq`` (and every earlier one) is consumed: free what can go.

        Staged entries and reservations whose bytes never arrived are dropped once no
        unconsumed batch references them.
        """
        store, watch = self.store, self._watch
        if LOC_STAGING not in self._pending and not any(self._pending.values()):
            watch.clear()  # nothing pending and no staging pool: nothing to watch
        while watch and watch[0][1] <= seq:
            s, _ = watch.popleft()
            st = store.state(s)
            if store.last_use(s) > seq or self._index_of[s] < 0:
                if st == PENDING or (st == LIVE and store.pool_of(s) == LOC_STAGING):
                    watch.append((s, store.last_use(s)))
                continue
            if st == PENDING:
                self._evict(s)
                self.counts["abandoned"] += 1
            elif st == LIVE and store.pool_of(s) == LOC_STAGING:
                self._evict(s)
        store.release(seq)

    def new_epoch(self) -> None:
        """Epoch boundary: swap in the shadow heap and renew the substitutes."""
        self.epoch += 1
        self.policy.new_epoch()

    def update_importance(self, indices, importance) -> None:
        """New importance for samples; cached ones update the policy's shadow order."""
        idx = np.asarray(indices, np.int64).ravel()
        imp = np.asarray(importance, np.float64).ravel()
        if len(idx) != len(imp):
            raise ValueError(f"{len(idx)} indices but {len(imp)} importance values; "
                             f"pass one value per index")
        if len(idx) and (idx.min() < 0 or idx.max() >= self.n_samples):
            raise ValueError(f"an index is outside 0..{self.n_samples - 1}")
        slots = np.frombuffer(self._slot_of, np.int32)[idx]
        for s, w in zip(slots[slots >= 0].tolist(), imp[slots >= 0].tolist()):
            if w == w:
                self.policy.update(s, w)

    def slot_of(self, index: int) -> int:
        """Store slot currently holding (or reserved for) ``index``; -1 if none."""
        return self._slot_of[index]

    def stats(self) -> dict:
        """Counters since creation plus bytes and entries per pool."""
        out = dict(self.counts)
        for p in self._pools:
            out[f"pool{p}_used_bytes"] = self.store.used_bytes(p)
            out[f"pool{p}_capacity_bytes"] = self.store.pool_blocks(p) * self.config.block_bytes
        out["entries"] = self.store.max_entries - self.store.free_slot_count()
        return out

    def close(self) -> None:
        """Release the shared region (also done on garbage collection)."""
        self.store.close()
