"""Background reads from storage, many requests in flight, failures surfaced to the caller.

The :class:`Prefetcher` is the I/O engine of the main process. Its owner (the cache
pipeline) submits one :class:`ReadJob` per batch — the index runs that batch needs read:
single misses and L-packages — in the order the plan will need them. Reader threads
take work from one FIFO queue:

* a multi-sample run (an L-package) is read alone, with one sequential ``read_many``;
* single misses are read several at a time: a thread takes up to ``chunk`` consecutive
  singles from the head of the queue (fewer when the queue is short, so that every
  thread still gets work) and reads them, sorted into storage order, with one
  ``read_many`` call. Python overhead (thread hand-offs, wake-ups, bookkeeping) is then
  paid per call, not per sample, while ``threads`` calls stay in flight.

Reader threads keep the bytes with their job; the thread that delivers a job's last
run hands all of them to ``on_read(indices, raws)`` at once (one store call per batch;
the owner serialises its store writes with its own lock) and marks the job done.

Failures: an ``OSError`` from the source is retried ``retries`` times with exponential
backoff; a read that still fails (or fails with another exception) records the
exception in every job it served, and :meth:`wait` — called from the training loop when
the batch that needs the job comes up — raises :class:`PrefetchError` naming the
indices, chained to the original error. Nothing fails silently and nothing waits
forever: waits take a timeout.

Lookahead: :meth:`lookahead` suggests how many batches ahead to submit, from the
observed call latency and the rate at which batches are consumed, bounded by
``max_lookahead``.
"""

from __future__ import annotations

import threading
import time
import weakref
from typing import Any, Callable, List, Optional, Sequence

import numpy as np

from ._metrics_histogram import Histogram
from ._readers import ReaderCore
from .errors import PrefetchError

__all__ = ["Prefetcher", "ReadJob"]


class ReadJob:
    """The storage reads one batch needs, and their completion.

    Args:
        start: int first index of each run (or the indices of single reads).
        stop: int one past the last index of each run (default ``start + 1``: every
            run is one sample). Runs longer than one sample are read with one
            sequential ``read_many`` each.
        tag: anything the owner wants to keep with the job (e.g. a batch position).

    Attributes:
        done: set once every run was delivered, or the job failed.
        error: the exception that made the job fail, or None.
        failed: indices of the read that failed (empty unless ``error``).

    Raises:
        ValueError: ``start`` and ``stop`` differ in length or a run is empty.
    """

    __slots__ = ("start", "stop", "tag", "done", "error", "failed", "remaining",
                 "submitted", "got_indices", "got_raws")

    def __init__(self, start: Sequence[int], stop: Optional[Sequence[int]] = None,
                 tag: Any = None) -> None:
        self.start = np.asarray(start, dtype=np.int64).ravel()
        self.stop = (self.start + 1 if stop is None
                     else np.asarray(stop, dtype=np.int64).ravel())
        if len(self.stop) != len(self.start) or np.any(self.stop <= self.start):
            raise ValueError(f"ReadJob got {len(self.start)} starts and {len(self.stop)} "
                             "stops; pass one stop > start per run")
        self.tag = tag
        self.done = threading.Event()
        self.error: Optional[BaseException] = None
        self.failed: List[int] = []
        self.remaining = len(self.start)
        self.submitted = 0.0
        self.got_indices: List[int] = []  # bytes read so far, handed over when complete
        self.got_raws: List[Any] = []
        if not self.remaining:
            self.done.set()

    @property
    def indices(self) -> np.ndarray:
        """Every index the job reads, run after run (int64)."""
        if not len(self.start):
            return np.empty(0, np.int64)
        return np.concatenate([np.arange(a, z) for a, z in
                               zip(self.start.tolist(), self.stop.tolist())])

    @property
    def n_samples(self) -> int:
        """Samples the job reads."""
        return int((self.stop - self.start).sum())


class Prefetcher:
    """Reads jobs from ``source`` on background threads.

    Args:
        source: any Source (only ``read_many`` is used; it is called from several
            threads at once).
        on_read: called as ``on_read(indices, raws)`` once per job whose reads all
            succeeded, on the reader thread that finished it, before the job is marked
            done (``indices`` a list of ints in read order, ``raws`` their bytes in the
            same order); calls may run concurrently, so it must be thread-safe.
        threads: ``read_many`` calls in flight at once (>= 1).
        chunk: most single-sample reads combined into one ``read_many`` call (>= 1;
            1 reads every miss with its own call).
        retries: extra attempts after an ``OSError`` (>= 0).
        backoff_s: first retry delay in seconds, doubled per attempt (>= 0).
        max_lookahead: upper bound of :meth:`lookahead`, in batches (>= 1).
        low_water: samples; when the queued samples (:attr:`backlog`) fall below it,
            :attr:`on_low` is called (default 0: never).

    Attributes:
        on_low: ``on_low()`` called on a reader thread, with no lock held, when the
            backlog falls below ``low_water`` (None: nothing is called); the owner may
            submit more work.
        on_done: ``on_done(job)`` called once per submitted job, with no lock held,
            when it was delivered or failed (on the reader thread that finished it; for
            a job with nothing to read, in :meth:`submit`). None: nothing is called.

    Raises:
        ValueError: an argument is out of range.
    """

    def __init__(self, source: Any, on_read: Callable[[List[int], List[Any]], None], *,
                 threads: int = 16, chunk: int = 8, retries: int = 3,
                 backoff_s: float = 0.05, max_lookahead: int = 64,
                 low_water: int = 0) -> None:
        if threads < 1:
            raise ValueError(f"threads={threads} must be >= 1 request in flight")
        if chunk < 1:
            raise ValueError(f"chunk={chunk} must be >= 1 sample per read call")
        if retries < 0 or backoff_s < 0:
            raise ValueError(f"retries={retries} and backoff_s={backoff_s} must be >= 0")
        if max_lookahead < 1:
            raise ValueError(f"max_lookahead={max_lookahead} must be >= 1 batch")
        self.source = source
        self.threads, self.chunk = int(threads), int(chunk)
        self.retries = retries
        self.max_lookahead = max_lookahead
        self.jobs_submitted = 0
        self._core = ReaderCore(source, on_read, self.threads, self.chunk, retries, backoff_s)
        self._core.low_water = max(0, int(low_water))
        self._consumed_at: List[float] = []
        self._threads = [threading.Thread(target=self._core.loop, daemon=True,
                                          name=f"impact-prefetch-{i}")
                         for i in range(self.threads)]
        for t in self._threads:
            t.start()
        self._finalizer = weakref.finalize(self, ReaderCore.shutdown, self._core,
                                           self._threads)

    # -- submission ---------------------------------------------------------------
    def submit(self, job: ReadJob) -> ReadJob:
        """Queue ``job``'s runs behind those already queued; returns ``job``.

        Raises:
            RuntimeError: after :meth:`close`.
        """
        core = self._core
        job.submitted = time.perf_counter()
        self.jobs_submitted += 1
        if not job.remaining:  # nothing to read (every sample cached): done now
            with core.lock:
                core.jobs_done += 1
            if core.on_done is not None:
                core.on_done(job)
            return job
        with core.cond:
            if core.closed:
                raise RuntimeError("Prefetcher is closed; create a new one")
            core.runs.extend(zip(job.start.tolist(), job.stop.tolist(),
                                 [job] * job.remaining))
            core.backlog += job.n_samples
            core.cond.notify(min(job.remaining, self.threads))
        return job

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
                first = job.failed or job.indices[:8].tolist()
                more = "..." if len(first) >= 8 else ""
                raise PrefetchError(
                    f"reading indices {first[:8]}{more} failed after {self.retries} "
                    f"retries: {job.error!r}; check the storage, or raise retries="
                ) from job.error

    def consumed(self) -> None:
        """Record that one batch was consumed (feeds :meth:`lookahead`)."""
        self._consumed_at.append(time.perf_counter())
        if len(self._consumed_at) > 32:
            del self._consumed_at[:-32]

    @property
    def backlog(self) -> int:
        """Samples queued that no reader thread has taken yet."""
        return self._core.backlog

    @property
    def pending(self) -> int:
        """Jobs submitted and not yet delivered or failed."""
        core = self._core
        return max(0, self.jobs_submitted - core.jobs_done - core.failed)

    def lookahead(self) -> int:
        """Batches to keep submitted ahead: the time a batch's reads take, from submit
        to stored (or twice one call's latency, if longer), over the time per batch,
        plus slack."""
        core = self._core
        lat = core.latency_ema
        times = self._consumed_at
        if lat is None or len(times) < 2:
            return min(self.max_lookahead, 4)
        lat = max(2 * lat, core.job_seconds_ema or 0.0)
        per_batch = max((times[-1] - times[0]) / (len(times) - 1), 1e-4)
        return int(min(self.max_lookahead, max(2, np.ceil(lat / per_batch) + 2)))

    @property
    def on_low(self) -> Optional[Callable[[], None]]:
        """Called when the backlog falls below ``low_water`` (see the class doc)."""
        return self._core.on_low

    @on_low.setter
    def on_low(self, fn: Optional[Callable[[], None]]) -> None:
        self._core.on_low = fn

    @property
    def on_done(self) -> Optional[Callable[[ReadJob], None]]:
        """Called once per job when it finished (see the class doc)."""
        return self._core.on_done

    @on_done.setter
    def on_done(self, fn: Optional[Callable[[ReadJob], None]]) -> None:
        self._core.on_done = fn

    # -- figures ------------------------------------------------------------------
    @property
    def requests(self) -> int:
        """``read_many`` calls that succeeded."""
        return self._core.calls

    @property
    def samples_read(self) -> int:
        """Samples those calls returned."""
        return self._core.samples

    @property
    def bytes_read(self) -> int:
        """Bytes those calls returned."""
        return self._core.nbytes

    @property
    def retried(self) -> int:
        """Calls retried after an ``OSError``."""
        return self._core.retried

    @property
    def jobs_failed(self) -> int:
        """Jobs that failed (after their retries, or because of a close)."""
        return self._core.failed

    @property
    def read_seconds(self) -> float:
        """Summed wall time of successful ``read_many`` calls (seconds)."""
        return self._core.read_seconds

    @property
    def cpu_seconds(self) -> float:
        """CPU seconds the reader threads spent outside ``read_many`` (bookkeeping:
        taking work, storing bytes, completing jobs)."""
        return self._core.cpu_seconds

    @property
    def latency(self) -> Histogram:
        """Seconds per successful ``read_many`` call."""
        return self._core.latency

    # -- shutdown -----------------------------------------------------------------
    def close(self) -> None:
        """Fail queued jobs, let running reads finish, stop every thread. Idempotent."""
        self._finalizer()

    @property
    def closed(self) -> bool:
        """Whether :meth:`close` ran."""
        return self._core.closed

    def __enter__(self) -> "Prefetcher":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()
