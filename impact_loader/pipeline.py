"""CachePipeline: the sampler's annotator hook — plan, cache directory and prefetcher meet.

Where it runs: the hook (:class:`CachePipeline`) runs in the training process; the
annotator thread, the reader threads and the directory (:class:`CacheEngine`) run in
the dataset's cache service process by default on Linux (:mod:`impact_loader._service`,
which drives a :class:`CacheEngine` with the same calls), or in the training process
with ``cache_service=False``. The description below holds for both.

The sampler calls the pipeline for each batch it is about to yield
(its ``annotator`` hook). Ahead of that batch, a background thread
(:class:`~impact_loader._annotator.Annotator`) annotates the upcoming batches of the
epoch with the cache directory (hits, substitutions, admissions, L-packages) and submits
the storage reads they need to the :class:`Prefetcher`; the hook, on the training loop's
thread, takes batch *b*'s annotation and hands it over at once, tagged with its batch
sequence number. Under the cache service the hook does not even take it: it hands the
batch over *deferred* (planned indices and sequence number only, see
:class:`~impact_loader.plan.BatchPlan`), and the worker reads the annotation from the
service's :class:`~impact_loader.annotations.SharedAnnotations` once the batch is
ready. When a batch's reads, and those of every earlier batch, have landed in
the shared store, the pipeline marks its sequence number ready in a
:class:`~impact_loader.readiness.BatchReadiness` table; the DataLoader worker that got
the batch waits for that mark before copying from the store. A read that fails after
its retries surfaces in the training loop, at the next batch the sampler yields, as
:class:`PrefetchError` naming the indices (the worker reads the missing samples from
the source meanwhile); a read that does not finish within ``wait_timeout`` too.

H-tier budget: an H-tier sample is never substituted, so an H-tier miss is a random
read. The pipeline marks H-tier at most as many of an epoch's planned samples as the
H-cache holds (:func:`cap_h_tier`, the most important ones); the rest of the policy's
H-tier samples become L-tier, served by the L-cache's packages (sequential reads) or
substituted. Without the cap, a plan with more H-tier samples than the H-cache holds
turned the excess into random reads every epoch: on the reference scenario (cache 20%
of the data, 70% of the planned samples H-tier) about 4,300 per epoch.

Safe reuse of store memory: the directory frees an evicted entry only once the batch
sequence numbers that could read it are released. A batch can be released as soon as
its reader has copied it from the store: the worker (or, with ``num_workers=0``, the
main process) marks it *copied* in the readiness table. Failing that (a worker that
died, a custom dataset), a batch handed over has been received by the training loop
once ``outstanding`` more batches have been requested after it (a DataLoader keeps at
most ``num_workers * prefetch_factor`` batches in flight). So each hand-over releases,
in hand-over order, every batch that is copied or was handed over ``outstanding + 1``
hand-overs earlier (and every lower sequence number: annotations dropped by a restart
are never handed over). Should that ever be too early, the generation check turns the
read into a source read: slower, never wrong. The annotator thread makes that
``directory.release`` call, not the hook: on the loop's thread it waited for the
directory lock, held by a running annotation for milliseconds. Sequence numbers
continue across the pipelines of one dataset (``first_seq``): the directory and the
workers' ready flags key on them.
"""

from __future__ import annotations

import threading
import time
import weakref
from collections import deque
from typing import Any, Callable, Dict, List, Optional

import numpy as np

from ._annotator import Annotator
from .errors import PrefetchError
from .plan import LOC_H, LOC_L, TIER_H, TIER_L, BatchPlan
from .readiness import PENDING
from .prefetcher import Prefetcher

__all__ = ["CachePipeline", "CacheEngine", "cap_h_tier"]


class CachePipeline:
    """Annotates plans with cache locations and prefetches what they need.

    Args:
        sampler: the :class:`ImportanceSampler` whose plans are annotated.
        dataset: the :class:`ImpactDataset` owning the cache directory and the source.
            With ``cache_service=True`` the annotator, the readers and the directory
            run in the dataset's cache service process (:mod:`impact_loader._service`);
            this hook and the sampler stay in the training process.
        threads: storage requests in flight (prefetch threads).
        chunk: most single misses read with one ``read_many`` call (see
            :class:`Prefetcher`).
        outstanding: batches the DataLoader may hold after the one being yielded.
        wait_timeout: seconds a batch's reads may take: a worker waits at most this
            long for them (then reads the source), and a read still unfinished after it
            raises :class:`PrefetchError` at the next batch.
        retries / backoff_s: passed to the :class:`Prefetcher`.
        tiers: annotate with the plan's H/L tiers (default True). False annotates every
            sample as ``TIER_NONE`` (no substitution, every miss admitted while there is
            room): what a cache that holds the whole data set should do.
        first_seq: sequence number of the first batch (the dataset continues the
            numbering of its previous pipeline).

    Attributes:
        engine: the :class:`CacheEngine` (in this process) or the service's stand-in.
        cpu_seconds: CPU seconds of this hook on the training loop's thread (taking
            annotations, building plans; waiting takes no CPU; the annotator thread
            releases consumed batches).
        hook_seconds: wall seconds of this hook, waiting for annotations included (the
            DataLoader calls it from ``next()``, so it is part of the data-wait).
        counts: ``batches``, ``planned`` and ``waited_batches`` (batches handed over
            before their reads had landed, whose workers then waited for them);
            :meth:`stats` adds the engine's ``hits`` (cached, not substituted),
            ``substitutions`` and ``prefetched`` (samples read for the batches
            handed over).
    """

    def __init__(self, sampler: Any, dataset: Any, *, threads: int = 16, chunk: int = 8,
                 outstanding: int = 16, wait_timeout: float = 600.0, retries: int = 3,
                 backoff_s: float = 0.05, tiers: bool = True, first_seq: int = 0) -> None:
        if outstanding < 0:
            raise ValueError(f"outstanding={outstanding} must be >= 0 batches")
        self.sampler = sampler
        self.tiers = bool(tiers)
        self.wait_timeout = float(wait_timeout)
        self.readiness = dataset.readiness
        options = dict(batch_size=sampler.batch_size, threads=threads, chunk=chunk,
                       wait_timeout=self.wait_timeout, retries=retries,
                       backoff_s=backoff_s, tiers=self.tiers, first_seq=first_seq)
        service = getattr(dataset, "service", None)
        self.engine: Any = (service.engine(**options) if service is not None
                            else CacheEngine(dataset, **options))
        self._unreleased: deque = deque()  # sequence numbers handed over, in order
        self.outstanding = outstanding
        self._epoch: Optional[int] = None
        self._tier: Optional[np.ndarray] = None  # the epoch plan's tiers
        self.cpu_seconds = 0.0
        self.hook_seconds = 0.0
        self.counts = dict.fromkeys(("batches", "planned", "waited_batches"), 0)

    # The engine's parts, for callers and tests that look inside (in-process engine).
    directory = property(lambda self: self.engine.directory)
    prefetcher = property(lambda self: self.engine.prefetcher)
    annotator = property(lambda self: self.engine.annotator)
    _lock = property(lambda self: self.engine.lock)
    h_records = property(lambda self: self.engine.h_records)

    @property
    def next_seq(self) -> int:
        """Sequence number the next pipeline of the dataset starts at."""
        return self.engine.next_seq

    @property
    def outstanding(self) -> int:
        """Batches the DataLoader may hold after the one being yielded (>= 0)."""
        return self._outstanding

    @outstanding.setter
    def outstanding(self, value: int) -> None:
        if value < 0:
            raise ValueError(f"outstanding={value} must be >= 0 batches")
        self._outstanding = int(value)

    def _start_epoch(self, epoch: int, position: int) -> None:
        """New epoch: scores learnt last epoch re-key the H-heap; annotate the new plan."""
        sampler = self.sampler
        indices, tier = sampler.epoch_plan()  # built here, on the loop's thread
        importance = sampler.table.importance()
        h_records = self.engine.h_records
        if self.tiers and h_records is not None:
            tier = cap_h_tier(indices, tier, importance, h_records)
        self.engine.begin(indices, tier, importance, len(sampler), position,
                          rescore=self._epoch is not None)
        self._epoch = epoch
        self._tier = tier

    # -- sampler hook -------------------------------------------------------------
    def __call__(self, plan: BatchPlan) -> BatchPlan:
        """Return ``plan`` annotated (its reads may still be landing; see the module doc).

        Raises:
            PrefetchError: a read of a batch handed over earlier failed after its
                retries or did not finish within ``wait_timeout``, or annotating failed.
        """
        cpu, wall = time.thread_time(), time.perf_counter()
        engine = self.engine
        engine.check()
        if plan.epoch != self._epoch:
            self._start_epoch(plan.epoch, plan.position)
        b = plan.position
        bs = self.sampler.batch_size
        tier = self._tier[b * bs:(b + 1) * bs]
        if engine.deferred:  # the workers find the annotation in the shared table
            seq = engine.hand(b)
            landed = self.readiness.state(seq) != PENDING
            out = BatchPlan(plan.indices, tier=tier, epoch=plan.epoch, position=b,
                            seq=seq, deferred=True)
        else:
            try:
                ann, landed = engine.take(b, self.wait_timeout)
            except (RuntimeError, TimeoutError) as exc:
                raise PrefetchError(f"epoch {plan.epoch} batch {b}: {exc}") from exc
            seq = ann.seq
            out = BatchPlan(ann.indices, tier=tier, location=ann.location, slot=ann.slot,
                            generation=ann.generation, planned=ann.planned,
                            epoch=plan.epoch, position=b, seq=seq)
        if not landed:
            self.counts["waited_batches"] += 1  # handed over before its reads landed
        engine.release(self._release_point(seq))
        self.counts["batches"] += 1
        self.counts["planned"] += len(out)
        self.cpu_seconds += time.thread_time() - cpu
        self.hook_seconds += time.perf_counter() - wall
        return out

    def _release_point(self, seq: int) -> Optional[int]:
        """Batch ``seq`` is handed over: the last of the leading handed batches that
        are copied or ``outstanding + 1`` hand-overs old (see the module docstring),
        to release; None if none is."""
        unreleased, copied = self._unreleased, self.readiness.copied
        unreleased.append(seq)
        last = None
        while unreleased and (len(unreleased) > self._outstanding + 1
                              or copied(unreleased[0])):
            last = unreleased.popleft()
        return last

    def stats(self) -> Dict[str, Any]:
        """Pipeline counters plus the prefetcher's storage figures.

        CPU seconds of the cache wiring in the main process: ``annotate_cpu_s`` (the
        annotator thread), ``hook_cpu_s`` (this hook on the training loop's thread),
        ``prefetch_cpu_s`` (reader threads outside ``read_many``) and their sum
        ``bookkeeping_cpu_s``; ``hook_s`` is the hook's wall time. With the cache
        service, annotating and reading run in the service process: ``annotate_cpu_s``
        and ``prefetch_cpu_s`` are its threads' figures, ``service_cpu_s`` is all of
        its CPU (reads included), and ``bookkeeping_cpu_s`` counts this process only.
        """
        out = dict(self.counts)
        out.update(self.engine.stats())
        out.update(hook_cpu_s=self.cpu_seconds, hook_s=self.hook_seconds)
        local = 0.0 if "service_cpu_s" in out else out["annotate_cpu_s"] + out["prefetch_cpu_s"]
        out["bookkeeping_cpu_s"] = local + self.cpu_seconds
        return out

    def close(self) -> None:
        """Stop the annotator and the prefetch threads (idempotent)."""
        self.engine.close()


class CacheEngine:
    """The annotator thread, the reader threads and the directory lock of a pipeline.

    It runs where the cache directory lives: in the training process, or in the cache
    service process (:mod:`impact_loader._service`), which drives it with the same
    calls. ``dataset`` needs ``directory``, ``source``, ``readiness`` and
    ``record_blocks``; the other arguments are :class:`CachePipeline`'s, plus
    ``on_error`` and ``on_annotated`` (see :class:`~impact_loader._annotator.Annotator`).
    """

    #: False: the hook takes each annotation and hands it over inside the plan.
    deferred = False

    def __init__(self, dataset: Any, *, batch_size: int, threads: int, chunk: int,
                 wait_timeout: float, retries: int, backoff_s: float, tiers: bool,
                 first_seq: int, on_error: Optional[Callable] = None,
                 on_annotated: Optional[Callable] = None) -> None:
        self.directory = dataset.directory
        self.wait_timeout = float(wait_timeout)
        self.lock = threading.Lock()  # the directory is not thread-safe
        # Samples to keep queued for the readers: a full chunk for every thread, twice.
        backlog = 2 * int(threads) * int(chunk)
        readiness = dataset.readiness
        readiness.timeout = self.wait_timeout
        in_order = _InOrder(readiness, first_seq)
        # Batches handed over: their jobs (to check) and counts. Not a method of this
        # object: the annotator must not keep the engine alive (see close()).
        self._handed = _Handed()
        self.prefetcher = Prefetcher(dataset.source, _filler(self.directory, self.lock),
                                     threads=threads, chunk=chunk, retries=retries,
                                     backoff_s=backoff_s, low_water=backlog)
        self.annotator = Annotator(self.directory, self.lock, self.prefetcher,
                                   batch_size=batch_size,
                                   record_blocks=getattr(dataset, "record_blocks", 1),
                                   tiers=tiers, backlog_target=backlog,
                                   failed=lambda seq: in_order.done(seq, False),
                                   on_error=on_error, on_annotated=on_annotated,
                                   on_pinned=self._handed.pinned, skipped=in_order.skip)
        self.annotator.seq = int(first_seq) - 1
        # Records the H-cache holds, when an L-cache (the annotator's turnover pool)
        # serves the rest.
        self.h_records: Optional[int] = (
            self.directory.store.pool_blocks(LOC_H) // self.annotator.record_blocks
            if LOC_L in self.annotator.turnover else None)
        self.prefetcher.on_low = self.annotator.kick
        self.prefetcher.on_done = in_order.job_done
        self._finalizer = weakref.finalize(self, _shutdown, self.annotator, self.prefetcher)

    @property
    def next_seq(self) -> int:
        """Sequence number after the last one annotated."""
        return self.annotator.seq + 1

    def begin(self, indices: np.ndarray, tier: np.ndarray, importance: np.ndarray,
              n_batches: int, position: int, *, rescore: bool, tag: Any = None,
              first_seq: Optional[int] = None) -> None:
        """Annotate a new epoch plan from ``position`` on. ``rescore``: an epoch ends
        first (scores learnt in it re-key the H-heap, the shadow heap is swapped in).
        ``first_seq``: see :meth:`Annotator.start`."""
        self.annotator.stop()
        if rescore:
            with self.lock:
                self.directory.rescore_cached(importance)
                self.directory.new_epoch()
        self.annotator.start(indices, tier, importance, n_batches, position, tag,
                             first_seq)

    def take(self, b: int, timeout: float) -> tuple:
        """Hand over position ``b``: ``(annotation, landed)``, waiting for it.

        Raises:
            RuntimeError, TimeoutError: see :meth:`Annotator.take`.
        """
        ann, job, _ = self.annotator.take(b, timeout)
        self.prefetcher.consumed()
        return ann, job.done.is_set()

    def hand(self, b: int) -> None:
        """Position ``b`` was handed over before (or without) taking its annotation:
        the cache service's hook numbers batches itself, the workers read the
        annotations from the shared table."""
        self.annotator.handed(b)
        self.prefetcher.consumed()

    def release(self, seq: Optional[int]) -> None:
        """Batch ``seq`` and every earlier one are consumed (None: nothing new)."""
        if seq is not None:
            self.annotator.release(seq)

    def check(self) -> None:
        """Raise for a failed or stalled read of a batch handed over earlier.

        Raises:
            PrefetchError: naming the indices (chained to the storage error).
        """
        handed, now = self._handed.jobs, time.perf_counter()
        for job in list(handed):
            if job.done.is_set():
                handed.remove(job)
                if job.error is not None:
                    self.prefetcher.wait([job], timeout=0)  # raises its PrefetchError
            elif now - job.submitted > self.wait_timeout:
                handed.remove(job)
                self.prefetcher.wait([job], timeout=0)  # raises "did not finish"

    def stats(self) -> Dict[str, Any]:
        """Storage figures and the background threads' CPU seconds."""
        p = self.prefetcher
        return dict(self._handed.counts, storage_requests=p.requests, storage_bytes=p.bytes_read,
                    storage_retries=p.retried, storage_seconds=p.read_seconds,
                    annotate_cpu_s=self.annotator.cpu_seconds, prefetch_cpu_s=p.cpu_seconds)

    def close(self) -> None:
        """Stop the annotator and the prefetch threads (idempotent)."""
        self._finalizer()


def cap_h_tier(indices: np.ndarray, tier: np.ndarray, importance: np.ndarray,
               h_records: int) -> np.ndarray:
    """Mark H-tier at most the ``h_records`` most important H-tier samples of a plan.

    An H-tier sample is never substituted: when it is not cached it costs a random
    read. A plan with more H-tier samples than the H-cache holds would turn the excess
    into random reads every epoch (the H-cache cannot keep them), which is the very
    I/O the design avoids; as L-tier they are served from the L-cache's packages
    (sequential reads) or substituted. The policy's ranking is kept: the demoted ones
    are the least important of the H-tier. Returns ``tier`` itself when nothing changes.
    """
    h = (tier == TIER_H).nonzero()[0]
    if len(h) <= h_records:
        return tier
    out = tier.copy()
    if h_records <= 0:
        out[h] = TIER_L
        return out
    score = importance[indices[h]]
    demote = np.argpartition(-score, h_records - 1)[h_records:]
    out[h[demote]] = TIER_L
    return out


def _shutdown(annotator: Annotator, prefetcher: Prefetcher) -> None:
    annotator.close()
    prefetcher.close()


class _Handed:
    """The batches handed over: their read jobs, not yet checked, and their counts
    (cached samples not substituted, substitutions, samples read for them)."""

    def __init__(self) -> None:
        self.jobs: deque = deque()
        self.counts = dict.fromkeys(("hits", "substitutions", "prefetched"), 0)

    def pinned(self, item: tuple) -> None:
        """The annotator's ``on_pinned``: count the batch, watch its reads."""
        ann, job = item[0], item[1]
        self.jobs.append(job)
        c = self.counts
        c["hits"] += int(np.count_nonzero(ann.hit & ~ann.substituted))
        c["substitutions"] += int(np.count_nonzero(ann.substituted))
        c["prefetched"] += job.n_samples


class _InOrder:
    """Marks batch sequence numbers ready in order: ``seq`` is marked once its own job
    and every earlier one finished (a batch may use bytes an earlier batch loaded,
    e.g. a substitute from its L-package). A failed job counts as finished, marked
    failed; the workers then read what is missing from the source."""

    def __init__(self, readiness: Any, first_seq: int) -> None:
        self.readiness = readiness
        self.lock = threading.Lock()
        self.next = int(first_seq)  # lowest sequence number not yet marked
        self.finished: Dict[int, bool] = {}

    def job_done(self, job: Any) -> None:
        self.done(job.tag, job.error is None)

    def done(self, seq: int, ok: bool) -> None:
        self.skip(seq, seq + 1, ok)

    def skip(self, lo: int, hi: int, ok: bool = True) -> None:
        """Sequence numbers ``lo .. hi - 1`` are finished (unused ones: ok)."""
        with self.lock:
            for seq in range(lo, hi):
                self.finished[seq] = ok
            while self.next in self.finished:
                self.readiness.mark(self.next, self.finished.pop(self.next))
                self.next += 1


def _filler(directory: Any, lock: threading.Lock) -> Callable[[List[int], List[Any]], None]:
    """The prefetcher's ``on_read``: store bytes under the directory lock.

    A closure over the directory and the lock only, so reader threads never keep the
    pipeline (and through it the prefetcher) alive.
    """
    def fill(indices: List[int], raws: List[Any]) -> None:
        with lock:
            directory.fill(indices, raws)
    return fill
