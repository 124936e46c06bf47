"""The reader threads of the :class:`~impact_loader.prefetcher.Prefetcher`.

One FIFO queue of work units — ``(start, stop, job)`` runs in the order the plan needs
them — shared by ``threads`` reader threads. A thread takes either one multi-sample run
(an L-package, read alone with one sequential ``read_many``) or up to ``chunk``
consecutive single misses, fewer when the queue is short so that every thread gets
work; it reads them sorted into storage order with one call and keeps the bytes with
their job. The thread that delivers a job's last run hands all of the job's bytes to
``on_read`` at once (one store call per batch rather than per read: storing has a
per-call cost) and completes the job. Python overhead (wake-ups, hand-offs,
bookkeeping) is thus paid per call or per batch, not per sample.

Order window: a thread does not start a unit more than ``window`` units past the oldest
unit still being read, so reads stay near plan order even over a source that queues its
requests unfairly (a semaphore lets a thread that just finished overtake one that has
been waiting; with more threads than the storage serves at once, one unlucky read, and
the batch waiting for it, could otherwise sit behind every later read).

The threads reference only this object and ``on_read``, never the Prefetcher, so an
unreachable Prefetcher is collected and its finalizer stops them.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from typing import Any, Callable, List, Optional

from ._metrics_histogram import Histogram

__all__ = ["ReaderCore"]


class ReaderCore:
    """Work queue, counters and loop of the reader threads (see the module docstring).

    Args:
        source: the Source read from (``read_many`` only).
        on_read: ``on_read(indices, raws)``, called on the reading thread.
        threads: number of reader threads; chunk: most singles per call.
        retries: extra attempts after an ``OSError``; backoff_s: first retry delay (s).
    """

    def __init__(self, source: Any, on_read: Callable, threads: int, chunk: int,
                 retries: int, backoff_s: float) -> None:
        self.source, self.on_read = source, on_read
        self.threads, self.chunk = threads, chunk
        self.retries, self.backoff_s = retries, backoff_s
        self.cond = threading.Condition(threading.Lock())
        self.runs: deque = deque()  # (start, stop, job) in submission order
        self.backlog = 0  # samples queued and not yet taken by a thread
        # Work units are numbered as taken; a thread takes unit n only while n is less
        # than `window` past the oldest unit still being read (see loop()).
        self.window = 2 * threads
        self.next_unit = 0
        self.active: set = set()
        self.blocked = 0  # threads waiting for the window to move
        # on_low() is called (on a reader thread, no lock held) when the backlog falls
        # below low_water samples: the owner may queue more work.
        self.on_low: Optional[Callable[[], None]] = None
        self.low_water = 0
        # on_done(job) is called (on the thread that finished it, no lock held) once
        # per job, when it was delivered or failed.
        self.on_done: Optional[Callable[[Any], None]] = None
        self.closed = False
        self.lock = threading.Lock()  # counters
        self.calls = self.samples = self.nbytes = self.retried = self.failed = 0
        self.jobs_done = 0
        self.read_seconds = 0.0
        self.cpu_seconds = 0.0  # reader-thread CPU outside read_many (bookkeeping)
        self.latency = Histogram()
        self.latency_ema: Optional[float] = None  # one read_many call
        # A whole job, submit to stored: its reads queue behind earlier jobs' and share
        # the storage's requests in flight and bandwidth.
        self.job_seconds_ema: Optional[float] = None

    # -- one reader thread ----------------------------------------------------------
    def loop(self) -> None:
        """One reader thread: take units in queue order, within the window, until
        closed."""
        cond, runs, active = self.cond, self.runs, self.active
        unit = -1
        while True:
            with cond:
                if unit >= 0:
                    oldest = unit == min(active)
                    active.discard(unit)
                    if oldest and self.blocked:
                        cond.notify(self.blocked)
                while True:
                    if self.closed:
                        return
                    if runs:
                        if not active or self.next_unit < min(active) + self.window:
                            break
                        self.blocked += 1
                        cond.wait()
                        self.blocked -= 1
                    else:
                        cond.wait()
                t0 = time.thread_time()
                before = self.backlog
                group = self._take()
                unit = self.next_unit
                self.next_unit += 1
                active.add(unit)
                low = self.on_low if before >= self.low_water > self.backlog else None
            if low is not None:
                low()
            self._serve(group, t0)

    def _take(self) -> list:
        """Next work unit: one package, or up to ``chunk`` singles (queue lock held)."""
        runs = self.runs
        start, stop, _ = runs[0]
        if stop - start > 1:
            self.backlog -= stop - start
            return [runs.popleft()]
        # Short queue: spread it over the threads; long queue: full chunks.
        n = min(self.chunk, max(1, -(-len(runs) // self.threads)))
        group = []
        while runs and len(group) < n and runs[0][1] - runs[0][0] == 1:
            group.append(runs.popleft())
        self.backlog -= len(group)
        return group

    def _serve(self, group: list, t0: float) -> None:
        if len(group) == 1:
            indices = list(range(group[0][0], group[0][1]))
        else:
            indices = sorted(g[0] for g in group)  # storage order
        cpu = time.thread_time() - t0
        raws, error = self._read(indices)
        t1 = time.thread_time()
        if error is None and self.closed:
            error = RuntimeError("the prefetcher was closed before this read was stored")
        failed, complete = [], []
        with self.lock:
            if error is None:  # keep the bytes with their job until it is complete
                if len(group) == 1:
                    job = group[0][2]
                    job.got_indices.extend(indices)
                    job.got_raws.extend(raws)
                else:
                    by_index = dict(zip(indices, raws))
                    for start, _, job in group:
                        job.got_indices.append(start)
                        job.got_raws.append(by_index[start])
            for _, _, job in group:
                if error is not None and job.error is None:
                    job.error, job.failed = error, indices[:8]
                    self.failed += 1
                    failed.append(job)
                job.remaining -= 1
                if job.remaining == 0 and job.error is None:
                    complete.append(job)
        for job in complete:  # one store call per job: all of a batch's bytes at once
            try:
                self.on_read(job.got_indices, job.got_raws)
            except BaseException as exc:  # a failing store write is a job failure
                with self.lock:
                    job.error, job.failed = exc, job.got_indices[:8]
                    self.failed += 1
            else:
                secs = time.perf_counter() - job.submitted
                with self.lock:
                    self.jobs_done += 1
                    ema = self.job_seconds_ema
                    self.job_seconds_ema = secs if ema is None else 0.8 * ema + 0.2 * secs
            job.got_indices, job.got_raws = [], []
        with self.lock:
            self.cpu_seconds += cpu + time.thread_time() - t1
        for job in failed + complete:
            job.done.set()
            if self.on_done is not None:
                self.on_done(job)

    def _read(self, indices: list):
        attempt = 0
        while True:
            start = time.perf_counter()
            try:
                raws = self.source.read_many(indices)
            except OSError as exc:
                if attempt < self.retries and not self.closed:
                    with self.lock:
                        self.retried += 1
                    time.sleep(self.backoff_s * (2 ** attempt))
                    attempt += 1
                    continue
                return None, exc
            except BaseException as exc:  # surfaced in the training loop by wait()
                return None, exc
            secs = time.perf_counter() - start
            with self.lock:
                self.calls += 1
                self.samples += len(raws)
                self.nbytes += sum(map(len, raws))
                self.read_seconds += secs
                self.latency.observe(secs)
                ema = self.latency_ema
                self.latency_ema = secs if ema is None else 0.8 * ema + 0.2 * secs
            return raws, None

    # -- shutdown ---------------------------------------------------------------------
    def shutdown(self, threads: List[threading.Thread]) -> None:
        with self.cond:
            self.closed = True
            queued = list(self.runs)
            self.runs.clear()
            self.backlog = 0
            self.cond.notify_all()
        error = RuntimeError("the prefetcher was closed before this read ran")
        for _, _, job in queued:
            with self.lock:
                first = job.error is None
                if first:
                    job.error = error
                    self.failed += 1
            job.done.set()
            if first and self.on_done is not None:
                self.on_done(job)
        me = threading.current_thread()
        for t in threads:
            if t is not me:
                t.join(timeout=30)
