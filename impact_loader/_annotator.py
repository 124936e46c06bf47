"""The pipeline's annotator thread: annotates the epoch plan ahead of the DataLoader.

Annotating a batch (asking the cache directory where each sample is, admitting and
substituting) costs a few microseconds per sample of Python. Done when the DataLoader
asks the sampler for a batch, that time would sit on the training loop's critical path,
inside ``next(loader)``; here a background thread does it ahead of time, while the
training step computes, and submits each annotated batch's storage reads to the
:class:`~impact_loader.prefetcher.Prefetcher` at once. The sampler hook
(:class:`~impact_loader.pipeline.CachePipeline`, on the training loop's thread) only
takes finished annotations.

How far ahead: at least ``lookahead()`` batches past the one the loop is about to take
(enough to hide a read's latency at the rate batches are consumed), and further while
the readers have fewer than ``backlog_target`` samples queued (latency-bound storage
needs a full queue), up to ``max_lookahead`` batches, and only while the pools whose
entries turn over with the batches have room (see :meth:`Annotator._room`). Room counts
the entries each batch really holds: those of the batches annotated ahead, and those
of the batches handed over and not yet released (*pinned*), which :meth:`take` and
:meth:`release` track.

Releases run here too: the hook only records, with :meth:`Annotator.release`, up to
which sequence number the training loop has consumed, and this thread calls
``directory.release`` before its next annotation. The directory lock is held for a whole
``annotate`` call (milliseconds under load), so a release on the loop's thread waited
for it inside ``next(loader)``; releasing later than possible is always safe (entries
are freed later, never earlier).

Handing over: :meth:`take` waits for a position's annotation and returns it (the hook
in the training process, ``cache_service=False``). :meth:`handed` never waits: the cache
service's hook numbers the batches itself and hands them over before they are
annotated; a batch annotated after it was handed over is pinned at once, and one the
failed thread will never annotate is marked failed, so that its reader stops waiting.

Thread-safety: every directory call holds the pipeline's directory lock; positions, the
finished annotations and the accounting live under this object's condition. One thread
(the training loop's, or the service's command loop) calls ``start`` / ``take`` /
``handed`` / ``release``; the plan arrays it hands over are read-only.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from typing import Any, Callable, Dict, Optional

import numpy as np

from .plan import LOC_L, LOC_STAGING, TIER_NONE
from .prefetcher import ReadJob

__all__ = ["Annotator"]


class Annotator:
    """Background annotation of one epoch's plan at a time.

    Args:
        directory: the cache directory (``annotate``).
        lock: the lock every directory call holds.
        prefetcher: where each annotated batch's reads are submitted.
        batch_size: samples per batch of the plan.
        record_blocks: store blocks of a typical record.
        tiers: annotate with the plan's tiers (False: every sample ``TIER_NONE``).
        backlog_target: samples the readers should have queued.
        failed: ``failed(seq)`` is called when annotating batch ``seq`` raised (its
            reads were never submitted); submitted jobs are tagged with their ``seq``.
        on_error: optional; ``on_error(error, tag)`` on the annotator thread, no lock
            held, when annotating failed and the thread stops; ``tag`` is the one
            given to :meth:`start`. The cache service reports failures with it.
        on_annotated: optional; ``on_annotated(annotation)`` on the annotator thread
            as soon as the directory has annotated a batch, before its reads are
            submitted (the cache service writes it to the workers' table then, so that
            a batch marked ready always has its annotation there).
        on_pinned: optional; ``on_pinned(item)`` (the item :meth:`take` returns, plus
            its pool use) once a batch is both annotated and handed over, from
            :meth:`take` / :meth:`handed` or, for a batch handed before it was
            annotated, from the annotator thread; the engine counts it and watches its
            reads.
        skipped: optional; ``skipped(lo, hi)`` when a plan started with ``first_seq``
            leaves the sequence numbers ``lo .. hi - 1`` unused (never annotated).
    """

    def __init__(self, directory: Any, lock: threading.Lock, prefetcher: Any, *,
                 batch_size: int, record_blocks: int, tiers: bool,
                 backlog_target: int, failed: Callable[[int], None],
                 on_error: Optional[Callable[[BaseException, Any], None]] = None,
                 on_annotated: Optional[Callable[[Any], None]] = None,
                 on_pinned: Optional[Callable[[tuple], None]] = None,
                 skipped: Optional[Callable[[int, int], None]] = None) -> None:
        self.directory, self.lock, self.prefetcher = directory, lock, prefetcher
        self.failed, self.on_error = failed, on_error
        self.on_annotated, self.on_pinned, self.skipped = on_annotated, on_pinned, skipped
        self.batch_size = int(batch_size)
        self.record_blocks = max(1, int(record_blocks))
        self.tiers = bool(tiers)
        self.backlog_target = int(backlog_target)
        config, store = directory.config, directory.store
        # Pools whose entries turn over with the batches: staging (staged misses) and
        # the L-cache (substitutes): capacity in blocks, blocks kept free.
        self.turnover: Dict[int, tuple] = {}
        if config.staging_bytes > 0:
            self.turnover[LOC_STAGING] = (store.pool_blocks(LOC_STAGING), 0)
        if config.policy == "importance" and config.l_bytes >= config.block_bytes:
            self.turnover[LOC_L] = (store.pool_blocks(LOC_L),
                                    2 * config.package_size * self.record_blocks)
        self.peak = dict.fromkeys(self.turnover, 0)  # most entries one batch used
        self.cv = threading.Condition(threading.Lock())
        self.seq = -1  # batch sequence number of the last annotation
        self.cpu_seconds = 0.0  # CPU of the annotator thread (annotating, releasing)
        self._release_to = self._released = -1  # consumed / released sequence numbers
        self.error: Optional[BaseException] = None
        self._closed = False
        self._busy = False
        self._token = 0  # bumped when the plan changes; stale annotations are dropped
        self._plan: Optional[tuple] = None  # (indices, tier, importance, n_batches)
        self._tag: Any = None  # the caller's name of the current plan (see on_error)
        self._next = 0  # first position not yet annotated
        self._want = 0  # position the loop takes next
        self._ahead: Dict[int, tuple] = {}
        self._use = dict.fromkeys(self.turnover, 0)  # entries of the batches ahead
        self._pinned: deque = deque()  # (seq, entries) of batches handed, not released
        self._held = dict.fromkeys(self.turnover, 0)  # their entries, per pool
        self._thread: Optional[threading.Thread] = None

    # -- training-loop side -----------------------------------------------------------
    def start(self, indices: np.ndarray, tier: np.ndarray, importance: np.ndarray,
              n_batches: int, position: int, tag: Any = None,
              first_seq: Optional[int] = None) -> None:
        """Annotate a new plan from ``position`` on; drops annotations of the old one.

        ``first_seq``: the sequence number of batch ``position`` (None: the one after
        the last annotated); the caller that hands batches over before they are
        annotated numbers them itself (see :meth:`handed`).

        The caller updates the directory for a new epoch between :meth:`stop` and this.
        """
        with self.cv:
            self._reset(position, first_seq)
            self._plan = (indices, tier, importance, int(n_batches))
            self._tag = tag
            self.cv.notify_all()
        if self._thread is None:
            self._thread = threading.Thread(target=self._loop, name="impact-annotate",
                                            daemon=True)
            self._thread.start()

    def stop(self) -> None:
        """Stop annotating the current plan; returns once no annotation is running."""
        with self.cv:
            self._plan = None
            self._reset(0)

    def _reset(self, position: int, first_seq: Optional[int] = None) -> None:  # cv held
        self._token += 1
        self.settle()
        self._ahead.clear()
        self._use = dict.fromkeys(self.turnover, 0)
        self._next = self._want = position
        if first_seq is not None:
            if first_seq <= self.seq:
                raise ValueError(f"first_seq={first_seq} must exceed the last sequence "
                                 f"number annotated, {self.seq}")
            if self.skipped is not None and first_seq > self.seq + 1:
                self.skipped(self.seq + 1, first_seq)
            self.seq = first_seq - 1

    def settle(self) -> None:
        """Wait until no annotation is running (cv held)."""
        while self._busy:
            self.cv.wait()

    def take(self, b: int, timeout: float) -> tuple:
        """The annotation of position ``b``: ``(annotation, job, tier)``, waiting for it.

        A position other than the expected next one (a pass restarted mid-epoch)
        restarts annotation there.

        Raises:
            RuntimeError: the annotator failed (chained) or was closed.
            TimeoutError: no annotation within ``timeout`` seconds.
        """
        with self.cv:
            if b != self._want:
                self._restart(b, self._tag)
            self._want = b
            self.cv.notify_all()
            if not self.cv.wait_for(lambda: b in self._ahead or self.error is not None
                                    or self._closed, timeout):
                raise TimeoutError(f"batch {b} was not annotated within {timeout:.0f} s")
            if self.error is not None:
                raise RuntimeError(f"the annotator thread failed (annotating or releasing "
                                   f"batches) before batch {b}: {self.error!r}") \
                    from self.error
            if self._closed:
                raise RuntimeError("the cache pipeline was closed; create a new sampler")
            item = self._ahead.pop(b)
            self._pin(item, ahead=True)
            self._want = b + 1
            self.cv.notify_all()
        return item[:3]

    def handed(self, b: int) -> None:
        """Position ``b`` was handed over, annotated or not (never waits): its
        annotation is pinned now, or as soon as it is made (see ``on_pinned``)."""
        with self.cv:
            if b < self._want:
                return  # already handed
            self._want = b + 1
            item = self._ahead.pop(b, None)
            if item is not None:
                self._pin(item, ahead=True)
            elif self.error is not None:
                self._fail_handed()
            self.cv.notify_all()

    def _fail_handed(self) -> None:  # cv held, the thread has failed
        """Mark failed the positions handed over that the failed thread will never
        annotate, so that their readers stop waiting and read the source."""
        while self._plan is not None and self._next < min(self._want, self._plan[3]):
            self._next += 1
            self.seq += 1
            self.failed(self.seq)

    def _pin(self, item: tuple, *, ahead: bool) -> None:  # cv held
        """A batch annotated and handed over: its entries stay held until released."""
        ann, use = item[0], item[3]
        for p, k in use.items():
            if ahead:
                self._use[p] -= k
            self._held[p] += k
        self._pinned.append((ann.seq, use))
        if self.on_pinned is not None:
            self.on_pinned(item)

    def restart(self, b: int, tag: Any = None, first_seq: Optional[int] = None) -> None:
        """Annotate the current plan again from position ``b`` (a pass restarted
        mid-epoch); drops the annotations made ahead. ``first_seq`` as in
        :meth:`start`."""
        with self.cv:
            self._restart(b, tag, first_seq)
            self.cv.notify_all()

    def _restart(self, b: int, tag: Any, first_seq: Optional[int] = None) -> None:  # cv held
        plan = self._plan
        self._reset(b, first_seq)
        self._plan, self._tag = plan, tag

    def release(self, seq: int) -> None:
        """Batch ``seq`` and every earlier one are consumed; the thread releases them in
        the directory before its next annotation."""
        with self.cv:
            pinned = self._pinned
            while pinned and pinned[0][0] <= seq:
                for p, k in pinned.popleft()[1].items():
                    self._held[p] -= k
            if seq > self._release_to:
                self._release_to = seq
                self.cv.notify_all()

    def kick(self) -> None:
        """Re-check whether to annotate further (the readers' queue ran low)."""
        with self.cv:
            self.cv.notify_all()

    def close(self) -> None:
        """Stop the thread (idempotent)."""
        with self.cv:
            self._closed = True
            self.cv.notify_all()
        t = self._thread
        if t is not None and t is not threading.current_thread():
            t.join(timeout=30)

    # -- the thread -------------------------------------------------------------------
    def _room(self) -> bool:
        """Whether the turnover pools can take one more batch ahead (cv held).

        Staging holds the staged misses, the L-cache the substitutes, of the batches
        annotated ahead and of the batches handed over and not yet released (their
        entries are freed only then; counted exactly, see :meth:`take`). One more
        batch, and one of slack, must fit beside them: otherwise its staged misses
        would be left to the workers, and L-packages would evict entries whose memory
        comes back only after the package's bytes arrived (an abandoned read).

        This used to assume the ``outstanding`` batches the DataLoader may hold were
        all pinned at the largest size a batch ever had. On a small cache that
        estimate alone exceeded the L-cache (the reference scenario's default run: 8
        batches of up to 115 entries against 556), so the annotator never ran even one
        batch ahead, and each batch's package reads started only when the loop asked
        for it.
        """
        bs = self.batch_size
        for pool, (capacity, keep) in self.turnover.items():
            per_batch = bs if pool == LOC_STAGING else self.peak[pool]
            need = (self._use[pool] + self._held[pool] + 2 * per_batch) \
                * self.record_blocks + keep
            if need > capacity:
                return False
        return True

    def _wanted(self) -> bool:  # cv held
        if self._plan is None or self._next >= self._plan[3]:
            return False
        ahead = self._next - self._want
        if ahead <= 0:
            return True  # the loop waits for it
        p = self.prefetcher
        if ahead > p.max_lookahead or not self._room():
            return False
        return ahead <= p.lookahead() or p.backlog < self.backlog_target

    def _loop(self) -> None:
        try:
            self._steps()
        except BaseException as exc:  # deciding what to annotate failed: never silently
            with self.cv:
                self.error = self.error or exc
                self._busy = False
                self.cv.notify_all()  # take() raises it instead of waiting its timeout
        with self.cv:
            if self.error is not None:
                self._fail_handed()
        if self.error is not None and self.on_error is not None:
            self.on_error(self.error, self._tag)

    def _steps(self) -> None:
        cv = self.cv
        while True:
            with cv:
                while not self._closed and not self._wanted() \
                        and self._release_to == self._released:
                    cv.wait()
                if self._closed:
                    return
                release = self._release_to if self._release_to > self._released else None
                self._released = self._release_to
                b = None
                if self._wanted():
                    b, token = self._next, self._token
                    indices, tier, importance, _ = self._plan
                    self._next += 1
                    self.seq += 1
                    seq = self.seq
                    self._busy = True
            cpu = time.thread_time()
            item = None
            try:
                if release is not None:
                    with self.lock:
                        self.directory.release(release)
                if b is not None:
                    item = self._annotate(b, seq, indices, tier, importance)
            except BaseException as exc:  # surfaced by take() on the loop's thread
                self.error = exc
                if b is not None:
                    self.failed(seq)
            self.cpu_seconds += time.thread_time() - cpu
            with cv:
                if b is not None:
                    self._busy = False
                if item is not None and token == self._token:
                    for p, k in item[3].items():
                        self.peak[p] = max(self.peak[p], k)
                    if b < self._want:  # handed over already (see handed())
                        self._pin(item, ahead=False)
                    else:
                        self._ahead[b] = item
                        for p, k in item[3].items():
                            self._use[p] += k
                cv.notify_all()
                if self.error is not None:
                    return

    def _annotate(self, b: int, seq: int, indices: np.ndarray, tier: np.ndarray,
                  importance: np.ndarray) -> tuple:
        bs = self.batch_size
        idx, t = indices[b * bs:(b + 1) * bs], tier[b * bs:(b + 1) * bs]
        t_cache = t if self.tiers else np.full(len(idx), TIER_NONE, np.int8)
        with self.lock:
            ann = self.directory.annotate(idx, t_cache, importance[idx], seq=seq)
        if self.on_annotated is not None:
            self.on_annotated(ann)
        use = {p: int(np.count_nonzero(ann.location == p)) for p in self.turnover}
        reads = ann.reads
        job = self.prefetcher.submit(ReadJob(reads.start, reads.stop, tag=seq))
        return ann, job, t, use
