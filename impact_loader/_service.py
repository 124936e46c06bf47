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

Protocol (one duplex pipe; the service answers in order):

* the hook sends ``begin`` (a new epoch plan: indices, tiers, importance) or
  ``restart`` (a pass restarted mid-epoch), then for each batch handed over ``took``
  (position, the sequence number to release up to);
* the service pushes each finished annotation (``ann``) as soon as it exists, tagged
  with the plan it belongs to, so the hook usually finds it already in the pipe and
  never waits a round trip; a failed annotation (``failed``) and a read of a handed
  batch that failed or stalled (``error``) are pushed the same way and raised at the
  next batch as :class:`PrefetchError`;
* ``stats``, ``figures`` and ``directory`` are calls with a reply, for ``stats()`` and
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
from .errors import PrefetchError
from .readiness import PENDING

__all__ = ["CacheService", "RemoteDirectory"]


class CacheService:
    """The training process's handle of the cache service process of one dataset.

    Args:
        dataset: the :class:`ImpactDataset` (with a cache) whose directory, store,
            source and readiness table the service takes over.

    Raises:
        RuntimeError: the platform has no ``fork`` start method.
    """

    def __init__(self, dataset: Any) -> None:
        if "fork" not in mp.get_all_start_methods():
            raise RuntimeError("cache_service=True needs the 'fork' start method "
                               "(Linux); pass cache_service=False on this platform")
        ctx = mp.get_context("fork")
        ours, theirs = ctx.Pipe(duplex=True)
        directory = dataset.directory
        state = SimpleNamespace(directory=directory, source=dataset.source,
                                readiness=dataset.readiness,
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
        self._annotations: Dict[int, Any] = {}  # position -> annotation, current plan
        self._errors: list = []  # read failures of handed batches, to raise
        self._failed: Optional[str] = None  # annotating the current plan failed
        self._dead: Optional[str] = None
        self._tag = 0  # current plan; annotations of other plans are dropped
        self._want = 0  # position the hook takes next
        self._took: Optional[int] = None  # position handed, 'took' not yet sent
        self._engine = 0  # id of the open engine
        self._finalizer = weakref.finalize(self, _stop, self.process, ours, os.getpid())

    # -- engine per pipeline ------------------------------------------------------
    def engine(self, **options: Any) -> "ServiceEngine":
        """Open a pipeline's engine in the service (closing the previous one)."""
        with self._lock:
            self._engine += 1
            self._annotations.clear()
            self._errors.clear()
            self._failed = None
            h_records = self.call("open", options)
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
        if kind == "ann":
            _, tag, b, ann = msg
            if tag == self._tag:
                self._annotations[b] = ann
        elif kind == "reply":
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
            self._flush()
            self._tag += 1
            self._annotations.clear()
            self._failed = None
            self._want = args[4]
            self.send("begin", args, rescore, self._tag)

    def take(self, engine: int, b: int, timeout: float) -> Any:
        with self._lock:
            self._own(engine)
            self._flush()
            if b != self._want:  # a pass restarted mid-epoch
                self._tag += 1
                self._annotations.clear()
                self._failed = None
                self.send("restart", b, self._tag)
            anns = self._annotations
            self._pump(lambda: b in anns or self._failed is not None, timeout,
                       f"the annotation of batch {b}")
            if b not in anns:
                raise RuntimeError(f"annotating batch {b} failed in the cache "
                                   f"service: {self._failed}")
            self._want = b + 1
            self._took = b
            return anns.pop(b)

    def release(self, engine: int, seq: Optional[int]) -> None:
        with self._lock:
            self._own(engine)
            self._flush(seq)

    def _flush(self, seq: Optional[int] = None) -> None:
        """Tell the service the last position taken, and up to which sequence number
        batches are consumed (lock held)."""
        if self._took is not None or seq is not None:
            b, self._took = self._took, None
            self.send("took", b, seq)

    def check(self, engine: int) -> None:
        with self._lock:
            self._own(engine)
            self._drain()
            if self._errors:
                raise PrefetchError(self._errors.pop(0))
            self._check_alive()

    def _own(self, engine: int) -> None:
        if engine != self._engine:
            raise RuntimeError("this cache pipeline was replaced by a newer sampler's; "
                               "use the newest sampler")

    def close(self) -> None:
        """Stop the service process (idempotent)."""
        self._finalizer()

    @property
    def closed(self) -> bool:
        return not self._finalizer.alive


class ServiceEngine:
    """What :class:`~impact_loader.pipeline.CachePipeline` calls when its engine runs in
    the cache service: the same methods as :class:`~impact_loader.pipeline.CacheEngine`,
    sent over the service's pipe."""

    def __init__(self, service: CacheService, engine: int, h_records: Optional[int]) -> None:
        self.service, self._id, self.h_records = service, engine, h_records
        self.directory = RemoteDirectory(service)

    def begin(self, indices: np.ndarray, tier: np.ndarray, importance: np.ndarray,
              n_batches: int, position: int, *, rescore: bool) -> None:
        self.service.begin(self._id, indices, tier, importance, int(n_batches),
                           int(position), rescore=rescore)

    def take(self, b: int, timeout: float) -> tuple:
        """``(annotation, landed, samples read for it)``; landed: the batch is marked
        ready (its reads and every earlier batch's are stored) or failed."""
        ann = self.service.take(self._id, b, timeout)
        return ann, self.service.readiness.state(ann.seq) != PENDING, ann.n_read

    def release(self, seq: Optional[int]) -> None:
        self.service.release(self._id, seq)

    def check(self) -> None:
        self.service.check(self._id)

    @property
    def next_seq(self) -> int:
        return self.service.call("next_seq")

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
    state.directory.store.adopt()
    _Host(conn, state).run()


class _Host:
    """Runs the operations the training process sends (see the module docstring)."""

    def __init__(self, conn: Any, state: SimpleNamespace) -> None:
        self.conn, self.state = conn, state
        self.directory = state.directory
        self.engine: Any = None
        self.next_seq = 0
        self.sending = threading.Lock()  # the annotator thread pushes annotations too
        self.readiness = state.readiness

    def push(self, msg: tuple) -> None:
        with self.sending:
            self.conn.send(msg)

    def run(self) -> None:
        conn = self.conn
        try:
            while True:
                if not conn.poll(0.5):
                    if orphaned():
                        return
                    continue
                try:
                    name, rid, args = conn.recv()
                except (EOFError, OSError):
                    return
                if name == "close":
                    return
                try:
                    value = getattr(self, "op_" + name)(*args)
                except BaseException as exc:  # reported to the training process
                    if rid is None:
                        self.push(("error", f"the cache service failed in {name!r}: "
                                            f"{exc!r}"))
                    else:
                        self.push(("reply", rid, False, repr(exc)))
                else:
                    if rid is not None:
                        self.push(("reply", rid, True, value))
        finally:
            if self.engine is not None:
                self.engine.close()
            self.directory.close()

    # -- operations -------------------------------------------------------------------
    def op_open(self, options: Dict[str, Any]) -> tuple:
        from .pipeline import CacheEngine

        self.op_close_engine()
        self.next_seq = options["first_seq"] = max(self.next_seq, options["first_seq"])
        self.engine = CacheEngine(self.state, on_ready=self._ready, **options)
        return self.engine.h_records

    def op_close_engine(self) -> None:
        if self.engine is not None:
            self.next_seq = self.engine.next_seq
            self.engine.close()
            self.engine = None

    def op_begin(self, args: tuple, rescore: bool, tag: int) -> None:
        self.engine.begin(*args, rescore=rescore, tag=tag)

    def op_restart(self, b: int, tag: int) -> None:
        self.engine.annotator.restart(b, tag)

    def op_took(self, b: Optional[int], seq: Optional[int]) -> None:
        engine = self.engine
        if b is not None:
            engine.take(b, 30.0)
        engine.release(seq)
        try:
            engine.check()
        except PrefetchError as exc:
            self.push(("error", str(exc)))

    def op_next_seq(self) -> int:
        return self.engine.next_seq if self.engine is not None else self.next_seq

    def op_stats(self) -> Dict[str, Any]:
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

    def _ready(self, b: Optional[int], item: Any, tag: Any) -> None:
        """The annotator's ``on_ready``: push the annotation (or the failure)."""
        if b is None:
            self.push(("failed", tag, repr(item)))
            return
        ann, job, _, _ = item
        self.push(("ann", tag, b, _Annotation(ann, job.n_samples)))


class _Annotation:
    """What the hook needs of one annotation (pickled to the training process)."""

    __slots__ = ("seq", "indices", "location", "slot", "generation", "planned", "hit",
                 "substituted", "n_read")

    def __init__(self, ann: Any, n_read: int) -> None:
        self.seq = ann.seq
        self.indices, self.location, self.slot = ann.indices, ann.location, ann.slot
        self.generation, self.planned = ann.generation, ann.planned
        self.hit, self.substituted = ann.hit, ann.substituted
        self.n_read = n_read


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
