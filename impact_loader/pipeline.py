"""CachePipeline: the sampler's annotator — plan, cache directory and prefetcher meet here.

Main process only. The sampler calls the pipeline for each batch it is about to yield
(its ``annotator`` hook). The pipeline works ahead of that batch: it annotates the
upcoming batches of the epoch with the cache directory (hits, substitutions,
admissions, L-packages), submits the storage reads they need to the
:class:`Prefetcher`, and before handing batch *b* to the DataLoader waits until batch
*b*'s own reads have landed in the shared store. A read that fails surfaces here, in the
training loop, as :class:`PrefetchError`.

Safe reuse of store memory: the directory frees an evicted entry only once the batch
sequence numbers that could read it are released. A batch yielded at sequence *s* has
been received by the training loop once ``outstanding`` more batches have been
requested after it (a DataLoader keeps at most ``num_workers * prefetch_factor`` batches
in flight), so yielding *s* releases ``s - outstanding - 1``. Should that ever be too
early, the generation check turns the read into a source read: slower, never wrong.
"""

from __future__ import annotations

import threading
import time
from typing import Any, Callable, Dict, List, Optional

import numpy as np

from .plan import LOC_L, LOC_STAGING, TIER_NONE, BatchPlan
from .prefetcher import Prefetcher, ReadJob

__all__ = ["CachePipeline"]


class CachePipeline:
    """Annotates plans with cache locations and prefetches what they need.

    Args:
        sampler: the :class:`ImportanceSampler` whose plans are annotated.
        dataset: the :class:`ImpactDataset` owning the cache directory and the source.
        threads: storage requests in flight (prefetch threads).
        chunk: most single misses read with one ``read_many`` call (see
            :class:`Prefetcher`).
        outstanding: batches the DataLoader may hold after the one being yielded.
        wait_timeout: seconds to wait for one batch's reads before failing.
        retries / backoff_s: passed to the :class:`Prefetcher`.
        tiers: annotate with the plan's H/L tiers (default True). False annotates every
            sample as ``TIER_NONE`` (no substitution, every miss admitted while there is
            room): what a cache that holds the whole data set should do.

    Attributes:
        cpu_seconds: main-thread CPU seconds spent in this hook (annotation and
            bookkeeping; waiting for reads takes no CPU).
    """

    def __init__(self, sampler: Any, dataset: Any, *, threads: int = 16, chunk: int = 8,
                 outstanding: int = 16, wait_timeout: float = 600.0, retries: int = 3,
                 backoff_s: float = 0.05, tiers: bool = True) -> None:
        if outstanding < 0:
            raise ValueError(f"outstanding={outstanding} must be >= 0 batches")
        self.sampler = sampler
        self.directory = dataset.directory
        self.outstanding = int(outstanding)
        self.tiers = bool(tiers)
        # Samples to keep queued for the readers: a full chunk for every thread, twice.
        self.backlog_target = 2 * int(threads) * int(chunk)
        # Pools whose entries turn over with the batches: staging (staged misses) and
        # the L-cache (substitutes, freed once used). Their use by the batches annotated
        # ahead bounds how far ahead the pipeline may run (see _room).
        config, store = self.directory.config, self.directory.store
        self._record_blocks = max(1, int(getattr(dataset, "record_blocks", 1)))
        self._turnover = {}  # pool -> (capacity in blocks, blocks kept free)
        if config.staging_bytes > 0:
            self._turnover[LOC_STAGING] = (store.pool_blocks(LOC_STAGING), 0)
        if config.policy == "importance" and config.l_bytes >= config.block_bytes:
            self._turnover[LOC_L] = (store.pool_blocks(LOC_L),
                                     2 * config.package_size * self._record_blocks)
        self._use_ahead = dict.fromkeys(self._turnover, 0)  # entries of batches ahead
        self._peak = dict.fromkeys(self._turnover, 0)  # most entries one batch used
        self._n_batches = 0
        self.wait_timeout = float(wait_timeout)
        self._lock = threading.Lock()  # the directory is not thread-safe
        self.prefetcher = Prefetcher(dataset.source, _filler(self.directory, self._lock),
                                     threads=threads, chunk=chunk, retries=retries,
                                     backoff_s=backoff_s)
        self._epoch: Optional[int] = None
        self._importance: Optional[np.ndarray] = None
        self._ahead: Dict[int, tuple] = {}  # position -> (annotation, job)
        self._next_position = 0  # first position not yet annotated
        self._seq = -1
        self.cpu_seconds = 0.0
        self.counts = dict.fromkeys(("batches", "planned", "hits", "substitutions",
                                     "prefetched", "waited_batches"), 0)

    # -- prefetch side ------------------------------------------------------------
    def _start_epoch(self, epoch: int) -> None:
        table = self.sampler.table
        importance = table.importance()
        with self._lock:
            if self._epoch is not None:
                # Scores learnt last epoch re-key the H-heap's shadow; swap it in now.
                self.directory.update_importance(np.arange(table.n), importance)
                self.directory.new_epoch()
        self._epoch = epoch
        self._importance = importance
        self._clear_ahead(0)
        self._n_batches = len(self.sampler)

    def _clear_ahead(self, position: int) -> None:
        self._ahead.clear()
        self._use_ahead = dict.fromkeys(self._turnover, 0)
        self._next_position = position

    def _room(self) -> bool:
        """Whether the turnover pools can take one more batch ahead.

        Staging holds the staged misses, the L-cache the substitutes, of the batches
        annotated ahead and of the ``outstanding`` batches the DataLoader may still
        read; their entries are freed only once those batches are consumed. One more
        batch must fit beside them: otherwise its staged misses would be left to the
        workers (``LOC_SOURCE``), and L-packages would evict entries whose memory comes
        back only after the package's bytes arrived (an abandoned read).
        """
        bs = self.sampler.batch_size
        for pool, (capacity, keep) in self._turnover.items():
            per_batch = bs if pool == LOC_STAGING else self._peak[pool]
            need = (self._use_ahead[pool] + (self.outstanding + 2) * per_batch) \
                * self._record_blocks + keep
            if need > capacity:
                return False
        return True

    def _annotate_until(self, last: int, current: int) -> None:
        """Annotate and submit positions up to ``last``; beyond ``current`` (the batch
        being yielded) only while staging has room."""
        indices, tier = self.sampler.epoch_plan()
        bs = self.sampler.batch_size
        last = min(last, self._n_batches - 1)
        while self._next_position <= last:
            b = self._next_position
            if b > current and not self._room():
                return
            idx, t = indices[b * bs:(b + 1) * bs], tier[b * bs:(b + 1) * bs]
            if not self.tiers:
                t = np.full(len(idx), TIER_NONE, np.int8)
            self._seq += 1
            with self._lock:
                ann = self.directory.annotate(idx, t, self._importance[idx], seq=self._seq)
            reads = ann.reads
            job = self.prefetcher.submit(ReadJob(reads.start, reads.stop, tag=b))
            self.counts["prefetched"] += job.n_samples
            use = {p: int(np.count_nonzero(ann.location == p)) for p in self._turnover}
            for p, k in use.items():
                self._use_ahead[p] += k
                self._peak[p] = max(self._peak[p], k)
            self._ahead[b] = (ann, job, tier[b * bs:(b + 1) * bs], use)
            self._next_position += 1

    def _deepen(self, b: int) -> None:
        """Annotate further ahead while the readers have too little work queued.

        Throughput of latency-bound storage is requests-in-flight / latency, so the
        queue must never run dry; the batch-based lookahead alone lets it drain when a
        few batches need many reads. Bounded by ``max_lookahead`` batches and by the
        staging space the reads ahead would occupy (:meth:`_room`).
        """
        prefetcher = self.prefetcher
        limit = b + prefetcher.max_lookahead
        while (prefetcher.backlog < self.backlog_target and self._next_position <= limit
               and self._next_position < self._n_batches and self._room()):
            self._annotate_until(self._next_position, b)

    # -- sampler hook -------------------------------------------------------------
    def __call__(self, plan: BatchPlan) -> BatchPlan:
        """Return ``plan`` annotated; blocks until its own reads have landed."""
        cpu = time.thread_time()
        if plan.epoch != self._epoch:
            self._start_epoch(plan.epoch)
        b = plan.position
        if b not in self._ahead:
            # A pass restarted mid-epoch (resume): annotate from here on.
            self._clear_ahead(b)
        self._annotate_until(b + self.prefetcher.lookahead(), b)
        self._deepen(b)
        ann, job, tier, use = self._ahead.pop(b)
        for p, k in use.items():
            self._use_ahead[p] -= k
        if not job.done.is_set():
            self.counts["waited_batches"] += 1
        self.prefetcher.wait([job], timeout=self.wait_timeout)
        self.prefetcher.consumed()
        with self._lock:
            if ann.seq - self.outstanding - 1 >= 0:
                self.directory.release(ann.seq - self.outstanding - 1)
        c = self.counts
        c["batches"] += 1
        c["planned"] += len(ann.indices)
        c["hits"] += int(np.count_nonzero(ann.hit & ~ann.substituted))
        c["substitutions"] += int(np.count_nonzero(ann.substituted))
        out = BatchPlan(ann.indices, tier=tier, location=ann.location, slot=ann.slot,
                        generation=ann.generation, planned=ann.planned,
                        epoch=plan.epoch, position=b)
        self.cpu_seconds += time.thread_time() - cpu
        return out

    def stats(self) -> Dict[str, Any]:
        """Pipeline counters plus the prefetcher's storage figures.

        ``bookkeeping_cpu_s`` is the main-process CPU of the cache wiring: this hook on
        the training loop's thread plus the reader threads outside ``read_many``.
        """
        p = self.prefetcher
        out = dict(self.counts)
        out.update(storage_requests=p.requests, storage_bytes=p.bytes_read,
                   storage_retries=p.retried, storage_seconds=p.read_seconds,
                   annotate_cpu_s=self.cpu_seconds, prefetch_cpu_s=p.cpu_seconds,
                   bookkeeping_cpu_s=self.cpu_seconds + p.cpu_seconds)
        return out

    def close(self) -> None:
        """Stop the prefetch threads (idempotent)."""
        self.prefetcher.close()


def _filler(directory: Any, lock: threading.Lock) -> Callable[[List[int], List[Any]], None]:
    """The prefetcher's ``on_read``: store bytes under the directory lock.

    A closure over the directory and the lock only, so reader threads never keep the
    pipeline (and through it the prefetcher) alive.
    """
    def fill(indices: List[int], raws: List[Any]) -> None:
        with lock:
            directory.fill(indices, raws)
    return fill
