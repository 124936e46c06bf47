"""Background reads from storage, many requests in flight, failures surfaced to the caller.

The :class:`Prefetcher` is the I/O engine of the main process. Its owner (the sampler
wiring) submits *read jobs* — a group of indices read with one ``read_many`` call, e.g.
one L-package or the misses of one batch — in the order the plan will need them. Jobs
run on a pool of threads (so ``threads`` requests are in flight); each finished read is
handed to ``on_read`` on a single delivery thread, so the cache store, which only its
owner may change, is written by one thread at a time.

Failures: an ``OSError`` from the source is retried ``retries`` times with exponential
backoff; a job that still fails (or fails with another exception) records the exception
with its traceback, and :meth:`wait` — called from the training loop when the batch that
needs the job comes up — raises :class:`PrefetchError` naming the indices, chained to the
original error. Nothing fails silently and nothing waits forever: waits take a timeout.

Lookahead: :meth:`lookahead` suggests how many batches ahead to submit, from the
observed read latency and the rate at which batches are consumed, bounded by
``max_lookahead``.
"""

from __future__ import annotations

import queue
import threading
import time
import weakref
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, Callable, List, Optional, Sequence

import numpy as np

from ._metrics_histogram import Histogram
from .errors import PrefetchError

__all__ = ["Prefetcher", "ReadJob"]


class ReadJob:
    """One ``read_many`` call and what to do with its bytes.

    Attributes:
        indices: int64 sample indices, read in this order.
        tag: anything the owner needs in ``on_read`` (e.g. a package id).
        done: set once the bytes were delivered or the job failed.
        error: the exception that made the job fail, or None.
    """

    __slots__ = ("indices", "tag", "done", "error", "future", "submitted")

    def __init__(self, indices: Sequence[int], tag: Any = None) -> None:
        self.indices = np.asarray(indices, dtype=np.int64)
        self.tag = tag
        self.done = threading.Event()
        self.error: Optional[BaseException] = None
        self.future: Optional[Future] = None
        self.submitted = 0.0


class Prefetcher:
    """Reads jobs from ``source`` on background threads.

    Args:
        source: any Source (only ``read_many`` is used).
        on_read: called as ``on_read(job, raws)`` on the delivery thread for each
            successful job.
        threads: reads in flight at once (>= 1).
        retries: extra attempts after an ``OSError`` (>= 0).
        backoff_s: first retry delay in seconds, doubled per attempt (>= 0).
        max_lookahead: upper bound of :meth:`lookahead`, in batches (>= 1).

    Raises:
        ValueError: an argument is out of range.
    """

    def __init__(self, source: Any, on_read: Callable[[ReadJob, List[bytes]], None], *,
                 threads: int = 16, retries: int = 3, backoff_s: float = 0.05,
                 max_lookahead: int = 64) -> None:
        if threads < 1:
            raise ValueError(f"threads={threads} must be >= 1 request in flight")
        if retries < 0 or backoff_s < 0:
            raise ValueError(f"retries={retries} and backoff_s={backoff_s} must be >= 0")
        if max_lookahead < 1:
            raise ValueError(f"max_lookahead={max_lookahead} must be >= 1 batch")
        self.source = source
        self.on_read = on_read
        self.retries = retries
        self.backoff_s = backoff_s
        self.max_lookahead = max_lookahead
        self._pool = ThreadPoolExecutor(threads, thread_name_prefix="impact-prefetch")
        self._deliveries: "queue.Queue[Optional[tuple]]" = queue.Queue()
        self._closed = False
        self._lock = threading.Lock()
        self.jobs_submitted = 0
        self.jobs_done = 0
        self.jobs_failed = 0  # failed after their retries
        self.requests = 0
        self.samples_read = 0
        self.bytes_read = 0
        self.retried = 0
        self.read_seconds = 0.0  # summed latency of successful read_many calls
        self.latency = Histogram()  # seconds per successful read_many call
        self._latency_ema: Optional[float] = None
        self._consumed_at: List[float] = []
        self._delivery = threading.Thread(target=self._deliver, name="impact-deliver",
                                          daemon=True)
        self._delivery.start()
        self._finalizer = weakref.finalize(self, Prefetcher._shutdown, self._pool,
                                           self._deliveries, self._delivery)

    # -- submission ---------------------------------------------------------------
    def submit(self, job: ReadJob) -> ReadJob:
        """Queue ``job``; returns it. Raises RuntimeError after :meth:`close`."""
        if self._closed:
            raise RuntimeError("Prefetcher is closed; create a new one")
        job.submitted = time.perf_counter()
        self.jobs_submitted += 1
        job.future = self._pool.submit(self._read, job)
        job.future.add_done_callback(lambda f, job=job: self._cancelled(f, job))
        return job

    @staticmethod
    def _cancelled(future: Future, job: ReadJob) -> None:
        if future.cancelled():
            job.error = RuntimeError("the prefetcher was closed before this read ran")
            job.done.set()

    def _read(self, job: ReadJob) -> None:
        attempt = 0
        while True:
            start = time.perf_counter()
            try:
                raws = self.source.read_many(job.indices)
            except OSError as exc:
                if attempt < self.retries and not self._closed:
                    with self._lock:
                        self.retried += 1
                    time.sleep(self.backoff_s * (2 ** attempt))
                    attempt += 1
                    continue
                self._fail(job, exc)
                return
            except BaseException as exc:  # surfaced in the training loop by wait()
                self._fail(job, exc)
                return
            secs = time.perf_counter() - start
            with self._lock:
                self.requests += 1
                self.samples_read += len(raws)
                self.bytes_read += sum(len(r) for r in raws)
                self.read_seconds += secs
                self.latency.observe(secs)
                ema = self._latency_ema
                self._latency_ema = secs if ema is None else 0.8 * ema + 0.2 * secs
            self._deliveries.put((job, raws))
            return

    def _fail(self, job: ReadJob, exc: BaseException) -> None:
        with self._lock:
            self.jobs_failed += 1
        job.error = exc
        job.done.set()

    def _deliver(self) -> None:
        while True:
            item = self._deliveries.get()
            if item is None:
                return
            job, raws = item
            try:
                self.on_read(job, raws)
            except BaseException as exc:  # a failing store write is a job failure
                job.error = exc
            with self._lock:
                self.jobs_done += 1
            job.done.set()

    # -- consumption --------------------------------------------------------------
    def wait(self, jobs: Sequence[ReadJob], timeout: float = 300.0) -> None:
        """Block until ``jobs`` are delivered; raise the first failure.

        Raises:
            PrefetchError: a job failed after its retries (chained to the cause), or
                did not finish within ``timeout`` seconds.
        """
        deadline = time.monotonic() + timeout
        for job in jobs:
            if not job.done.wait(max(0.0, deadline - time.monotonic())):
                raise PrefetchError(
                    f"reading indices {job.indices[:8].tolist()} did not finish within "
                    f"{timeout:.0f} s; storage is stalled or far slower than expected")
            if job.error is not None:
                first = job.indices[:8].tolist()
                raise PrefetchError(
                    f"reading indices {first}{'...' if len(job.indices) > 8 else ''} "
                    f"failed after {self.retries} retries: {job.error!r}; check the "
                    "storage, or raise retries=") from job.error

    def consumed(self) -> None:
        """Record that one batch was consumed (feeds :meth:`lookahead`)."""
        now = time.perf_counter()
        self._consumed_at.append(now)
        if len(self._consumed_at) > 32:
            del self._consumed_at[:-32]

    @property
    def pending(self) -> int:
        """Read jobs submitted and not yet delivered or failed (queued or in flight)."""
        return max(0, self.jobs_submitted - self.jobs_done - self.jobs_failed)

    def lookahead(self) -> int:
        """Batches to keep submitted ahead: latency / time per batch, plus slack."""
        lat = self._latency_ema
        times = self._consumed_at
        if lat is None or len(times) < 2:
            return min(self.max_lookahead, 4)
        per_batch = max((times[-1] - times[0]) / (len(times) - 1), 1e-4)
        return int(min(self.max_lookahead, max(2, np.ceil(2 * lat / per_batch) + 2)))

    # -- shutdown -----------------------------------------------------------------
    def close(self) -> None:
        """Cancel queued jobs, finish running ones, stop every thread. Idempotent."""
        self._closed = True
        self._finalizer()

    @staticmethod
    def _shutdown(pool: ThreadPoolExecutor, deliveries: "queue.Queue",
                  delivery: threading.Thread) -> None:
        pool.shutdown(wait=True, cancel_futures=True)
        deliveries.put(None)
        if delivery is not threading.current_thread():
            delivery.join(timeout=30)

    def __enter__(self) -> "Prefetcher":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()
