"""CacheDirectory: which sample is where; decides admissions and substitutions.

It lives in the main process (inside the sampler) and owns the :class:`SharedStore`, the
index<->slot maps and the chosen policy. The protocol, per batch ``seq`` (0, 1, 2, ...):

1. **Plan** -- ``a = directory.annotate(indices, tier, importance, seq=seq)`` with the
   batch's numpy arrays (``TIER_NONE`` for uniform plans). Hits get their slot and
   generation; a missed L-sample may get a substitute (``a.indices`` reports it);
   misses the policy admits get a reserved slot (evicting through the policy's
   ``victims`` hook); L-refills schedule a whole package. ``a.reads`` lists the storage
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
   the substitutes); ``update_importance(indices, importance)`` any time
   (``rescore_cached(importance)`` for all samples at once).

A batch is processed as a whole, in numpy: hits first (touched, so nothing this batch
reads can be reused before it is consumed), then the L-cache's substitutes and packages
(``lserve.py``), then admissions of the remaining misses and staging
(``admission.py``). Admission works on an estimate of the record size (running mean of
filled records; one block before the first fill). ``fill`` (``placement.py``) does the
exact accounting: if the record does not fit, it evicts through the same hook, or
abandons the reservation (the worker then reads the source). Bytes are never over
budget: each pool has a fixed block count.

Memory: 4 bytes per dataset sample (index->slot, plus one spare cell) and 4 per slot
(slot->index), plus the store's and the policy's per-slot arrays; slots grow with the
entries in use. Batch sequence numbers must stay < 2**31.
"""

from __future__ import annotations

import numpy as np

from .admission import admit_misses, evict
from .annotation import Annotation, BatchBuilder
from .checks import check_plan, check_updates
from .codes import LOC_STAGING, TIER_L
from .config import CacheConfig
from .lserve import serve_l
from .placement import fill
from .registry import make_policy
from .slots import LIVE, PENDING, unique
from .store import SharedStore
from .watch import PendingWatch

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
        self.policy = make_policy(config, 0, n_samples)
        pools = list(self.policy.pools())
        if config.staging_bytes:
            pools.append((LOC_STAGING, config.staging_bytes))
        self.store = SharedStore(pools=pools, block_bytes=config.block_bytes,
                                 max_entries=config.max_entries or max(n_blocks, 1))
        self._pools = [p for p, _ in pools]
        self._staging = bool(config.staging_bytes)
        # One extra cell at the end: a write through index -1 (the slot->index map's
        # "no sample") lands there, so evicting never needs to filter unmapped slots.
        self._slot_of = np.full(n_samples + 1, -1, np.int32)
        self._index_of = np.full(0, -1, np.int32)
        self._sync_capacity()
        self._pending = [0] * 8  # reservations awaiting bytes, per pool id
        self._watch = PendingWatch()
        self._est_blocks = 1
        self._size_sum = self._size_n = 0
        self._seq = -1
        self.epoch = 0
        self.counts = dict.fromkeys(("planned", "hits", "substitutions", "admitted",
                                     "evicted", "filled", "abandoned", "staged"), 0)

    def _sync_capacity(self) -> None:
        """Grow slot-indexed arrays (ours and the policy's) to the store's capacity."""
        cap = self.store.capacity
        extra = cap - len(self._index_of)
        if extra > 0:
            self._index_of = np.concatenate([self._index_of,
                                             np.full(extra, -1, np.int32)])
            self.policy.grow(cap)

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
        idx, tier, imp = check_plan(indices, tier, importance, seq, self._seq,
                                    self.n_samples)
        self._seq = seq
        self.store._check_owner()
        b = BatchBuilder(idx, tier, imp, seq, self._slot_of[idx].astype(np.int64))
        if np.count_nonzero(b.hit):
            hits = b.slot[b.hit]
            self.store._touch_latest(hits, seq)
            self.policy.hit(hits, imp[b.hit], idx[b.hit])
        if np.count_nonzero(b.hit) < len(b.hit):
            if self.policy.has_l_cache:
                serve_l(self, b)
            admit_misses(self, b)
        a = b.annotation(self.store)
        self.counts["planned"] += len(idx)
        self.counts["hits"] += int(np.count_nonzero(a.hit))
        self.counts["substitutions"] += int(np.count_nonzero(a.substituted))
        return a

    def lookup(self, index: int, *, tier: int = TIER_L):
        """Query one sample without admitting anything.

        A cached sample is returned as is; a missed L-sample gets a substitute (marked
        used for this epoch) when the policy substitutes.

        Returns:
            ``(delivered_index, location, slot, generation)`` or None on a miss.
        """
        idx, tier_arr, _ = check_plan([index], [tier], None, max(self._seq, 0), self._seq,
                                      self.n_samples)
        s = self._slot_of[idx].astype(np.int64)
        if s[0] < 0:
            if not (self.policy.has_l_cache and self.policy.substitutable(tier_arr)[0]):
                return None
            s = self.policy.take_substitutes(1)
            if not len(s):
                return None
            idx = self._index_of[s].astype(np.int64)
        self.policy.hit(s, np.full(1, np.nan), idx)
        slot = int(s[0])
        return int(idx[0]), self.store.pool_of(slot), slot, self.store.generation(slot)

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
        return fill(self, indices, records)

    def put(self, index: int, data) -> bool:
        """Store the bytes of one pending ``index``; returns whether they were stored."""
        return self.fill([index], [data]) == 1

    # ------------------------------------------------------------------ progress
    def release(self, seq: int) -> None:
        """Batch ``seq`` (and every earlier one) is consumed: free what can go.

        Staged entries and reservations whose bytes never arrived are dropped once no
        unconsumed batch references them.
        """
        store = self.store
        store._check_owner()
        if not self._staging and not any(self._pending):
            self._watch.clear()  # nothing pending and no staging pool: nothing to watch
        due = self._watch.due(seq)
        if len(due):
            t = store._t
            st = t.state[due]
            watched = (st == PENDING) | ((st == LIVE) & (t.pool[due] == LOC_STAGING))
            due = unique(due[watched])
            last = t.last_use[due]
            later = last > seq
            self._watch.add_by_key(due[later], last[later])
            now = due[~later]
            abandoned = now[t.state[now] == PENDING]
            evict(self, now)
            self.counts["abandoned"] += len(abandoned)
        store.release(seq)

    def new_epoch(self) -> None:
        """Epoch boundary: swap in the shadow heap and renew the substitutes."""
        self.epoch += 1
        self.policy.new_epoch()

    def update_importance(self, indices, importance) -> None:
        """New importance for samples; cached ones update the policy's shadow order."""
        idx, imp = check_updates(indices, importance, self.n_samples)
        self._update_cached(self._slot_of[idx].astype(np.int64), imp)

    def rescore_cached(self, importance) -> None:
        """New importance of every sample (array of ``n_samples``), applied to the
        cached ones only: the epoch-boundary rescoring, without an N-sized index array.

        Raises:
            ValueError: ``importance`` does not have one value per sample.
        """
        importance = np.asarray(importance)  # no copy: only cached entries are read
        if importance.shape != (self.n_samples,):
            raise ValueError(f"importance has shape {importance.shape}; rescore_cached "
                             f"needs one value per sample, shape ({self.n_samples},)")
        slots = (self._index_of >= 0).nonzero()[0]
        self._update_cached(slots, importance[self._index_of[slots]].astype(np.float64,
                                                                             copy=False))

    def _update_cached(self, slots: np.ndarray, imp: np.ndarray) -> None:
        """``policy.update`` for the entries among ``slots`` (-1: not cached) whose
        importance ``imp`` is known (not NaN)."""
        keep = (slots >= 0) & ~np.isnan(imp)
        if np.count_nonzero(keep):
            self.policy.update(slots[keep], imp[keep])

    def slot_of(self, index: int) -> int:
        """Store slot currently holding (or reserved for) ``index``; -1 if none."""
        return int(self._slot_of[index])

    def stats(self) -> dict:
        """Counters since creation plus bytes and entries per pool."""
        out = dict(self.counts)
        # Entries per pool: the store's per-slot pool id (-1 = free), counted in C.
        per_pool = np.bincount(self.store._pool.astype(np.intp) + 1, minlength=9)
        for p in self._pools:
            out[f"pool{p}_used_bytes"] = self.store.used_bytes(p)
            out[f"pool{p}_capacity_bytes"] = self.store.pool_blocks(p) * self.config.block_bytes
            out[f"pool{p}_entries"] = int(per_pool[p + 1])
        out["entries"] = self.store.max_entries - self.store.free_slot_count()
        return out

    def close(self) -> None:
        """Release the shared region (also done on garbage collection)."""
        self.store.close()
