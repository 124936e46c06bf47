"""BatchReadiness: which batches' prefetched bytes are in the store, seen by the workers.

The cache pipeline hands a batch plan to the DataLoader as soon as it is annotated, not
once its storage reads have landed: a DataLoader sends plans to its workers well ahead
of the training loop (``num_workers * prefetch_factor`` of them, all at once when an
epoch starts), and waiting for each batch's reads on the training loop's thread before
handing it over would stall the loop behind reads of batches it does not need yet. The
worker that receives batch ``seq`` waits here instead, in parallel with the loop, until
the main process marks ``seq`` *ready* (the reads of this batch and of every earlier one
are stored: a batch may be served from a package an earlier batch loaded) or *failed*;
it then copies from the store and reads anything missing from the source.

Once it has copied, the worker marks ``seq`` *copied*: it will not look at the store for
that batch again, so the cache may reuse the memory of entries evicted while the batch
was in flight (the pipeline releases a batch at the first of its copied mark and the
DataLoader's hand-over count, see :mod:`impact_loader.pipeline`). Without the mark, a
batch's entries stayed pinned until ``outstanding`` more batches had been handed over:
on a small cache, the batches a DataLoader holds pinned most of the L-cache.

Layout: two rows of ``cells`` int64 in an anonymous shared memory region (the
:class:`~impact_loader.cache.region.SharedRegion` the store and the worker counters
use); batch ``seq`` owns column ``seq % cells``. Its *state* cell holds ``seq + 1`` once
ready and ``-(seq + 1)`` once failed, its *copied* cell ``seq + 1`` once copied, so a
cell left over from an earlier batch never matches. The main process (or its cache
service process) writes the state row; the one process that reads batch ``seq`` (a
worker, or the main process with ``num_workers=0``) writes its copied cell. Aligned
8-byte stores are never torn. Cells are reused after ``cells`` batches, far more than a
DataLoader ever has in flight. The region's 8 metadata bytes hold the pid of the process
that marks batches when that is not the main process (the cache service), so that a
wait ends when it has died; 0 otherwise.
"""

from __future__ import annotations

import time

import numpy as np

from ._process import orphaned, process_gone
from ._shared_view import SharedView
from .cache.region import SharedRegion

__all__ = ["BatchReadiness", "READY", "FAILED", "PENDING"]

READY, FAILED, PENDING = 1, -1, 0


class BatchReadiness(SharedView):
    """Shared ready/failed/copied flags of batch sequence numbers (see the module doc).

    Args:
        cells: flags kept (>= 1024); batch ``seq`` uses cell ``seq % cells``.
        timeout: seconds :meth:`wait` waits at most (> 0).

    Raises:
        ValueError: an argument is out of range.
    """

    _VIEW = "_rows"  # closed once the view is gone (see SharedView)
    _VIEWS = ("_marker",)

    def __init__(self, *, cells: int = 4096, timeout: float = 600.0) -> None:
        if isinstance(cells, bool) or not isinstance(cells, int) or cells < 1024:
            raise ValueError(f"cells={cells!r} must be an int >= 1024 batches")
        if not timeout > 0:
            raise ValueError(f"timeout={timeout!r} must be > 0 seconds")
        self.timeout = float(timeout)
        self._setup(SharedRegion(2 * cells * 8, 8), self.timeout)

    def _setup(self, region: SharedRegion, timeout: float) -> None:
        self._region = region
        self.timeout = timeout
        self._rows = np.frombuffer(region.data, np.int64).reshape(2, -1)  # state, copied
        self._marker = np.frombuffer(region.meta, np.int64, 1)
        self.cells = self._rows.shape[1]

    def __reduce__(self):
        return (_attach, (self._region, self.timeout))

    def mark(self, seq: int, ok: bool) -> None:
        """Batch ``seq`` is ready (``ok``) or its reads failed (main process)."""
        self._rows[0, seq % self.cells] = seq + 1 if ok else -(seq + 1)

    def set_marker(self, pid: int) -> None:
        """Batches are marked by process ``pid`` from now on (0: the main process):
        :meth:`wait` gives up once that process has died."""
        self._marker[0] = int(pid)

    def _marker_gone(self) -> bool:
        pid = int(self._marker[0])
        return pid > 0 and process_gone(pid)

    def state(self, seq: int) -> int:
        """:data:`READY`, :data:`FAILED` or :data:`PENDING` for batch ``seq``."""
        v = int(self._rows[0, seq % self.cells])
        return READY if v == seq + 1 else FAILED if v == -(seq + 1) else PENDING

    def mark_copied(self, seq: int) -> None:
        """The reader of batch ``seq`` has copied what it needs from the store."""
        self._rows[1, seq % self.cells] = seq + 1

    def copied(self, seq: int) -> bool:
        """Whether batch ``seq`` was marked copied."""
        return int(self._rows[1, seq % self.cells]) == seq + 1

    def wait(self, seq: int) -> int:
        """Wait until batch ``seq`` is ready or failed, at most :attr:`timeout` seconds.

        Polls the shared flag, sleeping 0.1 ms at first and up to 0.5 ms between looks
        (no process-shared condition variable exists that works across fork, spawn and
        forkserver without a server process).

        Returns:
            The final state (:data:`PENDING` after a timeout, or as soon as the
            process that started this one, or the cache service that marks batches,
            has died: nobody will mark the batch, and a DataLoader worker must not
            outlive its parent); the caller then reads whatever the store does not
            hold from the source.
        """
        state = self.state(seq)
        if state != PENDING:
            return state
        now = time.monotonic()
        deadline, look = now + self.timeout, now + 0.05
        pause = 1e-4
        while True:
            time.sleep(pause)
            state = self.state(seq)
            if state != PENDING:
                return state
            now = time.monotonic()
            if now > deadline or orphaned():
                return state
            if now > look:  # a /proc read: every 50 ms at most
                look = now + 0.05
                if self._marker_gone():
                    return state
            pause = min(5e-4, pause * 1.5)


def _attach(region: SharedRegion, timeout: float) -> BatchReadiness:
    """Rebuild the flags around a region received from another process."""
    readiness = BatchReadiness.__new__(BatchReadiness)
    readiness._setup(region, timeout)
    return readiness
