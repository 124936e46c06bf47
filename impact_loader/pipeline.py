"""CachePipeline: the sampler's annotator hook — plan, cache directory and prefetcher meet.

Main process only. The sampler calls the pipeline for each batch it is about to yield
(its ``annotator`` hook). Ahead of that batch, a background thread
(:class:`~impact_loader._annotator.Annotator`) annotates the upcoming batches of the
epoch with the cache directory (hits, substitutions, admissions, L-packages) and submits
the storage reads they need to the :class:`Prefetcher`; the hook, on the training loop's
thread, takes batch *b*'s annotation and waits until *b*'s own reads have landed in the
shared store. A read that fails surfaces here, in the training loop, as
:class:`PrefetchError`.

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
import weakref
from typing import Any, Callable, Dict, List, Optional

import numpy as np

from ._annotator import Annotator
from .errors import PrefetchError
from .plan import BatchPlan
from .prefetcher import Prefetcher

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
        cpu_seconds: CPU seconds of this hook on the training loop's thread (taking
            annotations, releasing, building plans; waiting takes no CPU).
    """

    def __init__(self, sampler: Any, dataset: Any, *, threads: int = 16, chunk: int = 8,
                 outstanding: int = 16, wait_timeout: float = 600.0, retries: int = 3,
                 backoff_s: float = 0.05, tiers: bool = True) -> None:
        if outstanding < 0:
            raise ValueError(f"outstanding={outstanding} must be >= 0 batches")
        self.sampler = sampler
        self.directory = dataset.directory
        self.tiers = bool(tiers)
        self.wait_timeout = float(wait_timeout)
        self._lock = threading.Lock()  # the directory is not thread-safe
        # Samples to keep queued for the readers: a full chunk for every thread, twice.
        backlog = 2 * int(threads) * int(chunk)
        self.prefetcher = Prefetcher(dataset.source, _filler(self.directory, self._lock),
                                     threads=threads, chunk=chunk, retries=retries,
                                     backoff_s=backoff_s, low_water=backlog)
        self.annotator = Annotator(self.directory, self._lock, self.prefetcher,
                                   batch_size=sampler.batch_size,
                                   record_blocks=getattr(dataset, "record_blocks", 1),
                                   tiers=self.tiers, backlog_target=backlog)
        self.prefetcher.on_low = self.annotator.kick
        self.outstanding = outstanding
        self._epoch: Optional[int] = None
        self.cpu_seconds = 0.0
        self.counts = dict.fromkeys(("batches", "planned", "hits", "substitutions",
                                     "prefetched", "waited_batches"), 0)
        self._finalizer = weakref.finalize(self, _shutdown, self.annotator, self.prefetcher)

    @property
    def outstanding(self) -> int:
        """Batches the DataLoader may hold after the one being yielded (>= 0)."""
        return self.annotator.outstanding

    @outstanding.setter
    def outstanding(self, value: int) -> None:
        if value < 0:
            raise ValueError(f"outstanding={value} must be >= 0 batches")
        self.annotator.outstanding = int(value)

    def _start_epoch(self, epoch: int, position: int) -> None:
        """New epoch: scores learnt last epoch re-key the H-heap; annotate the new plan."""
        sampler = self.sampler
        indices, tier = sampler.epoch_plan()  # built here, on the loop's thread
        importance = sampler.table.importance()
        self.annotator.stop()
        with self._lock:
            if self._epoch is not None:
                self.directory.update_importance(np.arange(sampler.table.n), importance)
                self.directory.new_epoch()
        self._epoch = epoch
        self.annotator.start(indices, tier, importance, len(sampler), position)

    # -- sampler hook -------------------------------------------------------------
    def __call__(self, plan: BatchPlan) -> BatchPlan:
        """Return ``plan`` annotated; blocks until its own reads have landed.

        Raises:
            PrefetchError: a read this batch needs failed, or annotating failed.
        """
        cpu = time.thread_time()
        if plan.epoch != self._epoch:
            self._start_epoch(plan.epoch, plan.position)
        b = plan.position
        try:
            ann, job, tier = self.annotator.take(b, self.wait_timeout)
        except (RuntimeError, TimeoutError) as exc:
            raise PrefetchError(f"epoch {plan.epoch} batch {b}: {exc}") from exc
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
        c["prefetched"] += job.n_samples
        c["hits"] += int(np.count_nonzero(ann.hit & ~ann.substituted))
        c["substitutions"] += int(np.count_nonzero(ann.substituted))
        out = BatchPlan(ann.indices, tier=tier, location=ann.location, slot=ann.slot,
                        generation=ann.generation, planned=ann.planned,
                        epoch=plan.epoch, position=b)
        self.cpu_seconds += time.thread_time() - cpu
        return out

    def stats(self) -> Dict[str, Any]:
        """Pipeline counters plus the prefetcher's storage figures.

        CPU seconds of the cache wiring in the main process: ``annotate_cpu_s`` (the
        annotator thread), ``hook_cpu_s`` (this hook on the training loop's thread),
        ``prefetch_cpu_s`` (reader threads outside ``read_many``) and their sum
        ``bookkeeping_cpu_s``.
        """
        p, a = self.prefetcher, self.annotator
        out = dict(self.counts)
        out.update(storage_requests=p.requests, storage_bytes=p.bytes_read,
                   storage_retries=p.retried, storage_seconds=p.read_seconds,
                   annotate_cpu_s=a.cpu_seconds, hook_cpu_s=self.cpu_seconds,
                   prefetch_cpu_s=p.cpu_seconds,
                   bookkeeping_cpu_s=a.cpu_seconds + self.cpu_seconds + p.cpu_seconds)
        return out

    def close(self) -> None:
        """Stop the annotator and the prefetch threads (idempotent)."""
        self._finalizer()


def _shutdown(annotator: Annotator, prefetcher: Prefetcher) -> None:
    annotator.close()
    prefetcher.close()


def _filler(directory: Any, lock: threading.Lock) -> Callable[[List[int], List[Any]], None]:
    """The prefetcher's ``on_read``: store bytes under the directory lock.

    A closure over the directory and the lock only, so reader threads never keep the
    pipeline (and through it the prefetcher) alive.
    """
    def fill(indices: List[int], raws: List[Any]) -> None:
        with lock:
            directory.fill(indices, raws)
    return fill
