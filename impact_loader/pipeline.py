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
from typing import Any, Dict, List, Optional

import numpy as np

from .plan import LOC_STAGING, BatchPlan
from .prefetcher import Prefetcher, ReadJob

__all__ = ["CachePipeline"]


class CachePipeline:
    """Annotates plans with cache locations and prefetches what they need.

    Args:
        sampler: the :class:`ImportanceSampler` whose plans are annotated.
        dataset: the :class:`ImpactDataset` owning the cache directory and the source.
        threads: storage requests in flight (prefetch threads).
        outstanding: batches the DataLoader may hold after the one being yielded.
        wait_timeout: seconds to wait for one batch's reads before failing.
        retries / backoff_s: passed to the :class:`Prefetcher`.
    """

    def __init__(self, sampler: Any, dataset: Any, *, threads: int = 16,
                 outstanding: int = 16, wait_timeout: float = 600.0, retries: int = 3,
                 backoff_s: float = 0.05) -> None:
        if outstanding < 0:
            raise ValueError(f"outstanding={outstanding} must be >= 0 batches")
        self.sampler = sampler
        self.directory = dataset.directory
        self.outstanding = int(outstanding)
        self.queue_depth = 4 * int(threads)  # storage reads to keep queued
        self._staging = self.directory.config.staging_bytes > 0
        # Leave a quarter of staging for the batches right ahead.
        self._staging_reserve = (self.directory.store.pool_blocks(LOC_STAGING) // 4
                                 if self._staging else 0)
        self._n_batches = 0
        self.wait_timeout = float(wait_timeout)
        self._lock = threading.Lock()  # the directory is not thread-safe
        self.prefetcher = Prefetcher(dataset.source, self._fill, threads=threads,
                                     retries=retries, backoff_s=backoff_s)
        self._epoch: Optional[int] = None
        self._importance: Optional[np.ndarray] = None
        self._ahead: Dict[int, tuple] = {}  # position -> (annotation, jobs)
        self._next_position = 0  # first position not yet annotated
        self._seq = -1
        self.counts = dict.fromkeys(("batches", "planned", "hits", "substitutions",
                                     "prefetched", "waited_batches"), 0)

    # -- prefetch side ------------------------------------------------------------
    def _fill(self, job: ReadJob, raws: List[bytes]) -> None:
        with self._lock:
            self.directory.fill(job.indices, raws)

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
        self._ahead.clear()
        self._next_position = 0
        self._n_batches = len(self.sampler)

    def _annotate_until(self, last: int) -> None:
        indices, tier = self.sampler.epoch_plan()
        bs = self.sampler.batch_size
        last = min(last, self._n_batches - 1)
        while self._next_position <= last:
            b = self._next_position
            idx, t = indices[b * bs:(b + 1) * bs], tier[b * bs:(b + 1) * bs]
            self._seq += 1
            with self._lock:
                ann = self.directory.annotate(idx, t, self._importance[idx], seq=self._seq)
            jobs = [self.prefetcher.submit(ReadJob(np.arange(a, z), tag=b))
                    for a, z in ann.reads]
            self.counts["prefetched"] += sum(len(j.indices) for j in jobs)
            self._ahead[b] = (ann, jobs)
            self._next_position += 1

    def _deepen(self, b: int) -> None:
        """Annotate further ahead while storage has too few reads queued.

        Throughput of latency-bound storage is requests-in-flight / latency, so the
        queue must never run dry; the batch-based lookahead alone lets it drain when a
        few batches need many reads. Bounded by ``max_lookahead`` batches and by the
        staging space the reads ahead would occupy.
        """
        prefetcher, store = self.prefetcher, self.directory.store
        limit = b + prefetcher.max_lookahead
        staging = self._staging
        while (prefetcher.pending < self.queue_depth and self._next_position <= limit
               and self._next_position < self._n_batches):
            if staging and store.free_blocks(LOC_STAGING) < self._staging_reserve:
                return
            self._annotate_until(self._next_position)

    # -- sampler hook -------------------------------------------------------------
    def __call__(self, plan: BatchPlan) -> BatchPlan:
        """Return ``plan`` annotated; blocks until its own reads have landed."""
        if plan.epoch != self._epoch:
            self._start_epoch(plan.epoch)
        b = plan.position
        if b not in self._ahead:
            # A pass restarted mid-epoch (resume): annotate from here on.
            self._ahead.clear()
            self._next_position = b
        self._annotate_until(b + self.prefetcher.lookahead())
        self._deepen(b)
        ann, jobs = self._ahead.pop(b)
        if not all(j.done.is_set() for j in jobs):
            self.counts["waited_batches"] += 1
        self.prefetcher.wait(jobs, timeout=self.wait_timeout)
        self.prefetcher.consumed()
        with self._lock:
            if ann.seq - self.outstanding - 1 >= 0:
                self.directory.release(ann.seq - self.outstanding - 1)
        c = self.counts
        c["batches"] += 1
        c["planned"] += len(ann.indices)
        c["hits"] += int(np.count_nonzero(ann.hit & ~ann.substituted))
        c["substitutions"] += int(np.count_nonzero(ann.substituted))
        return BatchPlan(ann.indices, tier=ann.tier, location=ann.location, slot=ann.slot,
                         generation=ann.generation, planned=ann.planned,
                         epoch=plan.epoch, position=b)

    def stats(self) -> Dict[str, Any]:
        """Pipeline counters plus the prefetcher's storage figures."""
        p = self.prefetcher
        out = dict(self.counts)
        out.update(storage_requests=p.requests, storage_bytes=p.bytes_read,
                   storage_retries=p.retried, storage_seconds=p.read_seconds)
        return out

    def close(self) -> None:
        """Stop the prefetch threads (idempotent)."""
        self.prefetcher.close()
