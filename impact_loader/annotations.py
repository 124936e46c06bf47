"""SharedAnnotations: batch annotations the cache service writes and the workers read.

With the cache service (:mod:`impact_loader._service`), the sampler hook in the
training process does not wait for a batch's annotation (where each sample's bytes
are, which samples were substituted) nor receive it: it hands the batch over at once
with its sequence number, and the DataLoader worker that gets the batch reads the
annotation here. Receiving each annotation through the service's pipe cost the
training loop 0.3-0.5 ms per batch (a pickle of seven arrays, a poll and a read per
message, a write for each acknowledgement), and at an epoch's start the hook waited
for the first few annotations one after the other before the DataLoader could send
any batch to a worker (``benchmarks/RESULTS.md`` section 9).

Layout: one anonymous shared memory region (a
:class:`~impact_loader.cache.region.SharedRegion`, like the store and the readiness
flags) of ``rows`` rows; batch ``seq`` owns row ``seq % rows``. A row holds a stamp, the
item count, then ``indices``, ``slot`` and ``generation`` (int64) and ``location``
(int8) for up to ``width`` items. The writer (the service's annotator thread, before it
submits the batch's reads) clears the stamp, writes the arrays, then sets the stamp to
``seq + 1``; a reader copies the arrays between two reads of the stamp and uses them
only if both equal ``seq + 1`` (a row reused meanwhile is detected, never mixed in).
Aligned 8-byte stores are never torn, and x86 keeps stores in program order; the
worker reads a row only after the batch is marked ready in the
:class:`~impact_loader.readiness.BatchReadiness` table, which happens after the row was
written. A row that does not hold the batch (overwritten after ``rows`` more batches,
or never written because annotating failed) makes the worker read the planned samples
from the source: slower, never wrong.

The metadata bytes hold the hook's progress for the service (the training process
writes, the service polls, so no message is sent per batch): the last position handed
over (with the plan's tag) and the sequence number consumed up to; and a mail counter
the service bumps after each message it sends, so the hook looks at the pipe only
when there is something in it.
"""

from __future__ import annotations

from typing import Optional, Tuple

import numpy as np

from ._shared_view import SharedView
from .cache.region import SharedRegion

__all__ = ["SharedAnnotations"]

_HEAD = 2  # int64 cells before the arrays: stamp, item count
_HANDED, _RELEASE, _MAIL = 0, 1, 2  # metadata cells
_TAG_SHIFT = 32  # handed cell: (tag << 32) | (position + 1)


class SharedAnnotations(SharedView):
    """Rows of batch annotations in shared memory (see the module docstring).

    Args:
        rows: batches kept (>= 64); batch ``seq`` uses row ``seq % rows``. They must
            outnumber the batches annotated ahead plus those in flight in the
            DataLoader, or workers of the oldest batches read the source instead.
        width: most items per batch (the batch size, >= 1).

    Raises:
        ValueError: an argument is out of range.
    """

    _VIEW = "_rows"
    _VIEWS = ("_meta",)

    def __init__(self, *, rows: int = 256, width: int) -> None:
        for name, value, low in (("rows", rows, 64), ("width", width, 1)):
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise ValueError(f"{name}={value!r} must be an int >= {low}")
        row_cells = _HEAD + 3 * width + -(-width // 8)  # int8 locations, 8 per cell
        self._setup(SharedRegion(rows * row_cells * 8, 3 * 8), width)

    def _setup(self, region: SharedRegion, width: int) -> None:
        self._region = region
        self.width = width
        self._rows = np.frombuffer(region.data, np.int64).reshape(-1, _HEAD + 3 * width
                                                                  + -(-width // 8))
        self._meta = np.frombuffer(region.meta, np.int64, 3)
        self.rows = self._rows.shape[0]

    def __reduce__(self):
        return (_attach, (self._region, self.width))

    def _fields(self, seq: int) -> Tuple[np.ndarray, ...]:
        row = self._rows[seq % self.rows]
        w = self.width
        body = row[_HEAD:_HEAD + 3 * w]
        location = row[_HEAD + 3 * w:].view(np.int8)[:w]
        return row, body[:w], body[w:2 * w], body[2 * w:], location

    # -- the service's side ---------------------------------------------------------
    def write(self, seq: int, indices: np.ndarray, location: np.ndarray, slot: np.ndarray,
              generation: np.ndarray) -> None:
        """Store batch ``seq``'s annotation (at most ``width`` items).

        Raises:
            ValueError: more items than ``width``.
        """
        n = len(indices)
        if n > self.width:
            raise ValueError(f"a batch of {n} items does not fit rows of width "
                             f"{self.width}; the table is made for the sampler's "
                             "batch_size")
        row, idx, slots, gens, loc = self._fields(seq)
        row[0] = 0  # being written: no reader uses it
        idx[:n], slots[:n], gens[:n], loc[:n] = indices, slot, generation, location
        row[1] = n
        row[0] = seq + 1

    def post(self) -> None:
        """A message was sent to the training process (it looks at the pipe)."""
        self._meta[_MAIL] += 1

    def handed(self) -> Optional[Tuple[int, int]]:
        """``(tag, position)`` of the last batch handed over, or None."""
        v = int(self._meta[_HANDED])
        return None if v == 0 else (v >> _TAG_SHIFT, (v & ((1 << _TAG_SHIFT) - 1)) - 1)

    def released(self) -> int:
        """Sequence number consumed up to (-1: none)."""
        return int(self._meta[_RELEASE]) - 1

    # -- the training process's side --------------------------------------------------
    def hand(self, tag: int, position: int) -> None:
        """Batch ``position`` of plan ``tag`` is handed over to the DataLoader."""
        self._meta[_HANDED] = (int(tag) << _TAG_SHIFT) | (int(position) + 1)

    def release(self, seq: int) -> None:
        """Batches up to ``seq`` are consumed (their cache entries may be reused)."""
        self._meta[_RELEASE] = int(seq) + 1

    def mail(self) -> int:
        """How many messages the service has sent (see :meth:`post`)."""
        return int(self._meta[_MAIL])

    # -- the workers' side ------------------------------------------------------------
    def read(self, seq: int) -> Optional[Tuple[np.ndarray, np.ndarray, np.ndarray,
                                                np.ndarray]]:
        """Copies of batch ``seq``'s ``(indices, location, slot, generation)``, or None
        if its row does not hold it (not written, or reused since)."""
        row, idx, slots, gens, loc = self._fields(seq)
        if int(row[0]) != seq + 1:
            return None
        n = int(row[1])
        if not 0 <= n <= self.width:
            return None
        out = (idx[:n].copy(), loc[:n].copy(), slots[:n].copy(), gens[:n].copy())
        return out if int(row[0]) == seq + 1 else None


def _attach(region: SharedRegion, width: int) -> SharedAnnotations:
    """Rebuild the table around a region received from another process."""
    table = SharedAnnotations.__new__(SharedAnnotations)
    table._setup(region, width)
    return table
