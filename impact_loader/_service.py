"""The cache service: the cache directory, the annotator and the readers in a helper process.

Why: in the training process, the annotator thread and the reader threads hold the GIL
in bursts of 0.3-1.5 ms, and the training loop's thread waits for it at every Python
step (``benchmarks/RESULTS.md`` section 7: the model's step took 4 ms in impact's loop
against 1.8 ms in a plain DataLoader's). In their own process they run beside the loop
instead of taking turns with it.

What moves: the :class:`~impact_loader.cache.directory.CacheDirectory` (with the
store's owner side), a :class:`~impact_loader.pipeline.CacheEngine` per pipeline
(annotator thread, reader threads, in-order readiness marks) and the source's reads.
What stays in the training process: the sampler (importance table, epoch plans), the
pipeline's hook, and the readiness table and the store's memory, which are shared
memory already (the workers read both).

Protocol. Per batch, nothing crosses the pipe: the hook numbers the batch itself (each
plan gets a range of sequence numbers), hands it over at once as a *deferred*
:class:`~impact_loader.plan.BatchPlan`, and records its progress in the metadata of the
:class:`~impact_loader.annotations.SharedAnnotations` table (the position handed over,
the sequence number consumed up to), which the service polls every
``POLL_SECONDS``. The service writes each annotation to that table before it submits
the batch's reads; the worker that gets the batch reads the annotation there once the
batch is ready. The pipe (one duplex pipe; the service answers in order) carries:

* from the hook, ``begin`` (a new epoch plan: indices, tiers, importance, and the
  sequence number of its first batch) and ``restart`` (a pass restarted mid-epoch);
* from the service, a failed annotation (``failed``) and a read of a handed batch that
  failed or stalled (``error``), raised at the next batch as :class:`PrefetchError`
  (the service bumps the table's mail counter after each message, so the hook reads
  the pipe only then);
* ``stats``, ``figures`` and ``directory``: calls with a reply, for ``stats()`` and
  the metrics exporter.

The service starts by ``fork`` from the training process when the first sampler
attaches (the directory, the store and the source are inherited as they are; the child
adopts the store, the parent disowns it) and stops when the dataset is closed, when the
training process dies (it polls), or when the pipe breaks. Its shared memory is
anonymous (memfds): the kernel frees it with the last process holding it. If the service
dies, the next batch raises :class:`PrefetchError` naming its exit code; the workers'
waits for readiness end at their timeout and they read the source.
"""

from __future__ import annotations

import gc
import itertools
from contextlib import nullcontext
import multiprocessing as mp
import os
import threading
import time
import weakref
from types import SimpleNamespace
from typing import Any, Callable, Dict, Optional, Tuple

import numpy as np

from ._process import orphaned
from .annotations import SharedAnnotations
from .errors import PrefetchError
from .sampling.trim import release_free_heap

__all__ = ["CacheService", "RemoteDirectory"]

#: Seconds between the service's looks at the hook's progress while a plan runs.
POLL_SECONDS = 0.002


class CacheService:
    """The training process's handle of the cache service process of one dataset.

    Args:
        dataset: the :class:`ImpactDataset` (with a cache) whose directory, store,
            source and readiness table the service takes over.
        batch_size: the sampler's batch size (the width of the annotation table).

    Attributes:
        table: the :class:`SharedAnnotations` the service writes and the workers read.

    Raises:
        RuntimeError: the platform has no ``fork`` start method.
    """

    def __init__(self, dataset: Any, *, batch_size: int) -> None:
        if "fork" not in mp.get_all_start_methods():
            raise RuntimeError("cache_service=True needs the 'fork' start method "
                               "(Linux); pass cache_service=False on this platform")
        ctx = mp.get_context("fork")
        ours, theirs = ctx.Pipe(duplex=True)
        directory = dataset.directory
        self.table = SharedAnnotations(width=max(1, int(batch_size)))
        state = SimpleNamespace(directory=directory, source=dataset.source,
                                readiness=dataset.readiness, table=self.table,
                                record_blocks=dataset.record_blocks)
        self.process = ctx.Process(target=_serve, args=(theirs, ours, state),
                                   name="impact-cache-service", daemon=True)
        self.process.start()
        theirs.close()
        # Waits for readiness end when the service is gone (nobody would mark them).
        dataset.readiness.set_marker(self.process.pid)
        directory.store.disown()  # the service changes it from now on
        self.config = directory.config
        self.readiness = dataset.readiness
        self._conn = ours
        self._lock = threading.RLock()  # the pipe: the hook and a metrics scrape
        self._rid = itertools.count()
        self._replies: Dict[int, Tuple[bool, Any]] = {}
        self._errors: list = []  # read failures of handed batches, to raise
        self._failed: Optional[str] = None  # annotating the current plan failed
        self._dead: Optional[str] = None
        self._mail = 0  # messages of the service read so far (the table counts them)
        self._tag = 0  # current plan; failures of other plans are dropped
        self._want = 0  # position the hook hands over next
        # Current plan: (first position, its sequence number, batches); the next plan
        # is numbered from _next_seq (each plan reserves the numbers of all its
        # batches, so a restart never reuses one).
        self._plan = (0, 0, 0)
        self._next_seq = 0
        self._engine = 0  # id of the open engine
        self._finalizer = weakref.finalize(self, _stop, self.process, ours, os.getpid())

    # -- engine per pipeline ------------------------------------------------------
    def engine(self, **options: Any) -> "ServiceEngine":
        """Open a pipeline's engine in the service (closing the previous one)."""
        with self._lock:
            self._engine += 1
            self._errors.clear()
            self._failed = None
            if options["batch_size"] > self.table.width:  # a wider sampler: a new table
                table = SharedAnnotations(width=options["batch_size"])
                self.call("table", table)
                self.table.close()
                self.table = table
            h_records = self.call("open", options)
            self._next_seq = max(self._next_seq, options["first_seq"])
        return ServiceEngine(self, self._engine, h_records)

    # -- messages -----------------------------------------------------------------
    def send(self, name: str, *args: Any) -> None:
        """Send an operation that needs no reply."""
        self._send((name, None, args))

    def _send(self, msg: tuple) -> None:
        with self._lock:
            self._check_alive()
            try:
                self._conn.send(msg)
            except (OSError, ValueError) as exc:
                self._dead = (f"the pipe to the cache service broke ({exc!r}, exit code "
                              f"{self.process.exitcode})")
                self._check_alive()

    def call(self, name: str, *args: Any, timeout: float = 60.0) -> Any:
        """Run an operation in the service and return its result.

        Raises:
            RuntimeError: the operation failed there (message chained as text), or the
                service is gone.
            TimeoutError: no reply within ``timeout`` seconds.
        """
        with self._lock:
            self._check_alive()
            rid = next(self._rid)
            self._send((name, rid, args))
            self._pump(lambda: rid in self._replies, timeout, f"the reply to {name!r}")
            ok, value = self._replies.pop(rid)
        if not ok:
            raise RuntimeError(f"the cache service failed in {name!r}: {value}")
        return value

    def _pump(self, done: Callable[[], bool], timeout: float, what: str) -> None:
        """Receive messages until ``done()`` (lock held)."""
        deadline = time.monotonic() + timeout
        conn = self._conn
        while not done():
            self._check_alive()
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"{what} did not come from the cache service within "
                                   f"{timeout:.0f} s")
            try:
                if conn.poll(min(left, 1.0)):
                    self._dispatch(conn.recv())
                elif not self.process.is_alive():
                    self._dead = (f"the cache service process exited (code "
                                  f"{self.process.exitcode})")
            except (EOFError, OSError) as exc:
                self._dead = (f"the cache service process is gone ({exc!r}, exit code "
                              f"{self.process.exitcode})")

    def _drain(self) -> None:
        """Receive what is already in the pipe (lock held)."""
        conn = self._conn
        try:
            while conn.poll(0):
                self._dispatch(conn.recv())
        except (EOFError, OSError) as exc:
            self._dead = f"the cache service process is gone ({exc!r})"

    def _dispatch(self, msg: tuple) -> None:
        kind = msg[0]
        if kind == "reply":
            _, rid, ok, value = msg
            self._replies[rid] = (ok, value)
        elif kind == "failed":
            if msg[1] == self._tag:
                self._failed = msg[2]
        elif kind == "error":
            self._errors.append(msg[1])

    def _check_alive(self) -> None:
        if self._dead is not None:
            raise PrefetchError(self._dead + "; the cache can no longer serve this "
                                "dataset: close it and create a new one")

    # -- the hook's side ----------------------------------------------------------
    def begin(self, engine: int, *args: Any, rescore: bool) -> None:
        with self._lock:
            self._own(engine)
            position, n_batches = args[4], args[3]
            self.send("begin", args, rescore, self._new_plan(position, n_batches),
                      self._plan[1])

    def _new_plan(self, position: int, n_batches: int) -> int:
        """Number a plan (or its rest) from ``position``; returns its tag (lock held)."""
        self._tag += 1
        self._failed = None  # failures of earlier plans no longer count
        self._plan = (position, self._next_seq, n_batches)
        self._next_seq += max(0, n_batches - position)
        self._want = position
        return self._tag

    def hand(self, engine: int, b: int) -> int:
        """Hand position ``b`` over; returns its sequence number."""
        with self._lock:
            self._own(engine)
            self._check_alive()
            if b != self._want:  # a pass restarted mid-epoch
                tag = self._new_plan(b, self._plan[2])
                self.send("restart", b, tag, self._plan[1])
            first, seq0, _ = self._plan
            self.table.hand(self._tag, b)
            self._want = b + 1
            return seq0 + b - first

    def release(self, engine: int, seq: Optional[int]) -> None:
        if seq is not None and not self.table.closed:
            self.table.release(seq)

    def check(self, engine: int) -> None:
        with self._lock:
            self._own(engine)
            self._check_alive()
            mail = self.table.mail()
            if mail != self._mail:
                self._mail = mail
                self._drain()
            if self._errors:
                raise PrefetchError(self._errors.pop(0))
            if self._failed is not None:
                raise PrefetchError(f"annotating a batch failed in the cache service: "
                                    f"{self._failed}")
            if self._dead is None and not self.process.is_alive():
                self._dead = (f"the cache service process exited (code "
                              f"{self.process.exitcode})")
            self._check_alive()

    @property
    def next_seq(self) -> int:
        """Sequence number the next plan (or pipeline) starts at."""
        return self._next_seq

    def _own(self, engine: int) -> None:
        if engine != self._engine:
            raise RuntimeError("this cache pipeline was replaced by a newer sampler's; "
                               "use the newest sampler")

    def close(self) -> None:
        """Stop the service process and unmap its table here (idempotent)."""
        self._finalizer()
        if self._dead is None:
            self._dead = "the cache service was stopped (the dataset was closed)"
        self.table.close()

    @property
    def closed(self) -> bool:
        return not self._finalizer.alive


class ServiceEngine:
    """What :class:`~impact_loader.pipeline.CachePipeline` calls when its engine runs in
    the cache service: :class:`~impact_loader.pipeline.CacheEngine`'s methods, except
    that batches are handed over deferred (:meth:`hand`, not ``take``)."""

    #: The hook hands batches over without their annotation (see the module doc).
    deferred = True

    def __init__(self, service: CacheService, engine: int, h_records: Optional[int]) -> None:
        self.service, self._id, self.h_records = service, engine, h_records
        self.directory = RemoteDirectory(service)

    def begin(self, indices: np.ndarray, tier: np.ndarray, importance: np.ndarray,
              n_batches: int, position: int, *, rescore: bool) -> None:
        self.service.begin(self._id, indices, tier, importance, int(n_batches),
                           int(position), rescore=rescore)

    def hand(self, b: int) -> int:
        """Hand position ``b`` over; returns its sequence number."""
        return self.service.hand(self._id, b)

    def release(self, seq: Optional[int]) -> None:
        self.service.release(self._id, seq)

    def check(self) -> None:
        self.service.check(self._id)

    @property
    def next_seq(self) -> int:
        return self.service.next_seq

    def stats(self) -> Dict[str, Any]:
        return self.service.call("stats")

    @property
    def prefetcher(self) -> "PrefetcherFigures":
        """The service's prefetcher figures, read now (for metrics)."""
        return PrefetcherFigures(self.service.call("figures"))

    @property
    def annotator(self) -> Any:
        raise AttributeError("the annotator runs in the cache service process; "
                             "use stats() for its figures")

    @property
    def lock(self) -> Any:
        raise AttributeError("the directory lock is in the cache service process")

    def close(self) -> None:
        svc = self.service
        if not svc.closed and svc._engine == self._id and svc._dead is None:
            try:
                svc.call("close_engine")
            except (RuntimeError, TimeoutError):
                pass  # the service is gone: nothing runs any more


class PrefetcherFigures:
    """The prefetcher figures the metrics exporter reads, as of one call."""

    def __init__(self, figures: Dict[str, Any]) -> None:
        self.requests = figures["requests"]
        self.samples_read = figures["samples_read"]
        self.bytes_read = figures["bytes_read"]
        self.retried = figures["retried"]
        self.pending = figures["pending"]
        self._lookahead = figures["lookahead"]
        self.latency = SimpleNamespace(snapshot=lambda: figures["latency"])

    def lookahead(self) -> int:
        return self._lookahead


class RemoteDirectory:
    """The training process's view of a directory that lives in the cache service:
    its configuration, the store (read side) and :meth:`stats`."""

    def __init__(self, service: CacheService, store: Any = None) -> None:
        self._service = service
        self.config = service.config
        self.store = store

    def stats(self) -> Dict[str, Any]:
        """The directory's counters and pool figures, from the service."""
        return self._service.call("directory")

    @property
    def counts(self) -> Dict[str, int]:
        return {k: v for k, v in self.stats().items()
                if not k.startswith("pool") and k != "entries"}


# -- the service process --------------------------------------------------------------
def _serve(conn: Any, parent_end: Any, state: SimpleNamespace) -> None:
    """Entry point of the service process."""
    parent_end.close()  # so that the pipe breaks when the training process goes
    # What it inherited stays shared with the training process: a full collection
    # would write to every inherited object's header and turn its page private.
    gc.freeze()
    state.directory.store.adopt()
    _Host(conn, state).run()


class _Host:
    """Runs the operations the training process sends (see the module docstring)."""

    def __init__(self, conn: Any, state: SimpleNamespace) -> None:
        self.conn, self.state = conn, state
        self.directory = state.directory
        self.table: SharedAnnotations = state.table
        self.engine: Any = None
        self.sending = threading.Lock()  # the annotator thread reports failures too
        self.readiness = state.readiness
        # The plan the hook hands batches of: its tag, and the last position seen.
        self.tag: Optional[int] = None
        self.handed = -1
        self.released = -1

    def push(self, msg: tuple) -> None:
        with self.sending:
            self.conn.send(msg)
            self.table.post()

    def run(self) -> None:
        conn = self.conn
        orphan_look = time.monotonic() + 0.5
        try:
            while True:
                if conn.poll(POLL_SECONDS if self.tag is not None else 0.5):
                    try:
                        name, rid, args = conn.recv()
                    except (EOFError, OSError):
                        return
                    if name == "close":
                        return
                    self._run_op(name, rid, args)
                self._progress()
                if time.monotonic() > orphan_look:
                    if orphaned():
                        return
                    orphan_look = time.monotonic() + 0.5
        finally:
            if self.engine is not None:
                self.engine.close()
            self.directory.close()

    def _run_op(self, name: str, rid: Optional[int], args: tuple) -> None:
        try:
            value = getattr(self, "op_" + name)(*args)
        except BaseException as exc:  # reported to the training process
            if rid is None:
                self.push(("error", f"the cache service failed in {name!r}: {exc!r}"))
            else:
                self.push(("reply", rid, False, repr(exc)))
        else:
            if rid is not None:
                self.push(("reply", rid, True, value))

    def _progress(self) -> None:
        """Apply what the hook recorded in the table: batches handed over (each
        position of the current plan since the last look) and consumed."""
        engine = self.engine
        if engine is None or self.tag is None:
            return
        seen = self.table.handed()
        if seen is not None and seen[0] == self.tag and seen[1] > self.handed:
            for b in range(self.handed + 1, seen[1] + 1):
                engine.hand(b)
            self.handed = seen[1]
        released = self.table.released()
        if released > self.released:
            self.released = released
            engine.release(released)
        try:
            engine.check()
        except PrefetchError as exc:
            self.push(("error", str(exc)))

    def _settled(self) -> None:
        """Progress applied and no annotation running: the counts are complete for
        every batch the hook handed over (a batch its loop received was annotated)."""
        self._progress()
        with self.engine.annotator.cv:
            self.engine.annotator.settle()

    # -- operations -------------------------------------------------------------------
    def op_open(self, options: Dict[str, Any]) -> tuple:
        from .pipeline import CacheEngine

        self.op_close_engine()
        self.engine = CacheEngine(self.state, on_error=self._failed,
                                  on_annotated=self._annotated, **options)
        return self.engine.h_records

    def op_table(self, table: SharedAnnotations) -> None:
        """A wider table (a sampler with a larger batch size attached)."""
        self.table.close()
        self.table = self.state.table = table

    def op_close_engine(self) -> None:
        if self.engine is not None:
            self.engine.close()
            self.engine = None
        self.tag = None

    def op_begin(self, args: tuple, rescore: bool, tag: int, first_seq: int) -> None:
        self._plan(tag, args[4])
        self.engine.begin(*args, rescore=rescore, tag=tag, first_seq=first_seq)
        # The previous plan's N-sized arrays are free now: give the heap back to the
        # OS instead of keeping it resident all epoch (as the sampler does).
        release_free_heap()

    def op_restart(self, b: int, tag: int, first_seq: int) -> None:
        self._plan(tag, b)
        self.engine.annotator.restart(b, tag, first_seq)

    def _plan(self, tag: int, position: int) -> None:
        self._progress()  # the old plan's last hand-overs count
        self.tag, self.handed = tag, position - 1

    def op_stats(self) -> Dict[str, Any]:
        self._settled()
        out = self.engine.stats()
        out["service_cpu_s"] = time.process_time()
        return out

    def op_figures(self) -> Dict[str, Any]:
        p = self.engine.prefetcher
        return dict(requests=p.requests, samples_read=p.samples_read,
                    bytes_read=p.bytes_read, retried=p.retried, pending=p.pending,
                    lookahead=p.lookahead(), latency=p.latency.snapshot())

    def op_directory(self) -> Dict[str, Any]:
        with self.engine.lock if self.engine is not None else nullcontext():
            return self.directory.stats()

    def _annotated(self, ann: Any) -> None:
        """The annotator's ``on_annotated``: the workers' copy, before any read."""
        self.table.write(ann.seq, ann.indices, ann.location, ann.slot, ann.generation)

    def _failed(self, error: BaseException, tag: Any) -> None:
        """The annotator's ``on_error``: report it (annotations go through the table)."""
        self.push(("failed", tag, repr(error)))


def _stop(process: Any, conn: Any, owner: int) -> None:
    """Ask the service to stop, wait for it, kill it if it does not. Only in the
    process that started it: a forked DataLoader worker inherits this handle."""
    if os.getpid() != owner:
        return
    try:
        conn.send(("close", None, ()))
    except (OSError, ValueError):
        pass
    process.join(timeout=10)
    if process.is_alive():
        process.kill()
        process.join(timeout=5)
    conn.close()
