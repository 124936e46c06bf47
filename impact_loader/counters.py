"""WorkerCounters: counts made in DataLoader worker processes, visible to the main process.

DataLoader workers do the reads the main process cannot see: samples copied out of the
shared cache, and samples read from the source when the plan sends a worker there or
the cached bytes are gone (fallback). Their counts must reach the metrics exporter,
which runs in the main process, at scrape time.

Design: one small shared int64 table in an anonymous ``memfd`` region (the same
:class:`impact_loader.cache.region.SharedRegion` the cache store uses), created by
:class:`ImpactDataset` in the main process. Row 0 belongs to the main process (reads
with ``num_workers=0``, the record-size probe at construction); row ``1 + w`` to
DataLoader worker ``w`` (``torch.utils.data.get_worker_info().id``). Each row has one
writer, so increments need no lock and no atomic instruction: a worker adds to its own
row, and a reader (the exporter) sums the rows; aligned 8-byte loads and stores are
never torn, so a sum is at worst one batch behind. Columns: the scalar counts of
:data:`SCALARS`, then the per-request latency buckets of
:mod:`impact_loader._metrics_histogram`.

Sharing follows the store: under ``fork`` workers inherit the mapping; under ``spawn`` /
``forkserver`` the table pickles with the dataset and its descriptor travels with
``multiprocessing.reduction.DupFd``. The kernel frees the memory when the last holder
exits, so a crash leaves nothing behind.

Why not prometheus-client's multiprocess mode: it needs a directory of mmap files on
disk named by an environment variable set before the first import (a hidden global
setting), files that must be cleaned up between runs and after crashes (stale files
from dead pids keep being exported), a per-process registry wired to a
``MultiProcessCollector``, and the prometheus client imported into every worker. The
counts here are a fixed set of integers written by a known set of processes; a shared
table is smaller, needs no cleanup, and keeps prometheus out of the workers.

Limits: rows are per worker id, so two DataLoaders iterating the same dataset object at
the same time share rows (their increments may race and lose counts), and worker ids
at or above ``max_workers`` wrap around onto lower rows. Counts stay cumulative for the
life of the dataset object (persistent or not, workers of later epochs reuse the rows).
"""

from __future__ import annotations

import time
from typing import Any, Dict, List, Sequence

import numpy as np
from torch.utils.data import get_worker_info

from ._metrics_histogram import BUCKETS, bucket_of
from ._shared_view import SharedView
from .cache.region import SharedRegion

__all__ = ["WorkerCounters", "SCALARS", "TIER_NAMES"]

# Tier names by plan tier code (TIER_NONE, TIER_H, TIER_L).
TIER_NAMES = ("none", "h", "l")
SCALARS = ("batches",
           "hits_none", "hits_h", "hits_l",        # items served from the shared cache
           "misses_none", "misses_h", "misses_l",  # items read from the source
           "fallbacks",        # planned in the cache, bytes gone: read from the source
           "store_bytes",      # bytes copied out of the shared cache
           "source_requests",  # read_many calls
           "source_samples",   # records read from the source (items plus probes)
           "source_bytes",     # bytes the source returned
           "source_ns")        # summed read_many latency, nanoseconds
(_BATCHES, _HITS, _MISSES, _FALLBACKS, _STORE_BYTES, _REQUESTS, _SAMPLES, _BYTES,
 _NS) = (0, 1, 4, 7, 8, 9, 10, 11, 12)  # column of each count (hits/misses: + tier)
_LAT0 = len(SCALARS)
_COLUMNS = 32  # scalars + latency buckets, padded: a row is 256 bytes (own cache lines)
if _LAT0 + len(BUCKETS) + 1 > _COLUMNS:  # pragma: no cover - guards future edits
    raise ImportError("counters: too many columns for one row")


class WorkerCounters(SharedView):
    """A shared table of per-process read counters (see the module docstring).

    Args:
        max_workers: DataLoader worker ids with a row of their own (>= 1); the table
            takes ``(max_workers + 1) * 256`` bytes of shared memory, touched lazily.

    Raises:
        ValueError: ``max_workers`` is not a positive int.
    """

    _VIEW = "_rows"  # closed once the view is gone (see SharedView)

    def __init__(self, *, max_workers: int = 256) -> None:
        if isinstance(max_workers, bool) or not isinstance(max_workers, int) \
                or max_workers < 1:
            raise ValueError(f"max_workers={max_workers!r} must be an int >= 1; use "
                             "at least the DataLoader's num_workers")
        rows = max_workers + 1
        region = SharedRegion(rows * _COLUMNS * 8, 16)
        header = np.frombuffer(region.meta, np.int64, 2)
        header[:] = (rows, _COLUMNS)
        del header  # a live view would keep the mapping from closing
        self._setup(region)

    def _setup(self, region: SharedRegion) -> None:
        header = np.frombuffer(region.meta, np.int64, 2)
        rows, cols = (int(v) for v in header)
        del header
        if cols != _COLUMNS:
            raise ValueError(f"counter table has {cols} columns, this version expects "
                             f"{_COLUMNS}; run the same impact-loader in every process")
        self._region = region
        self.max_workers = rows - 1
        self._rows = np.frombuffer(region.data, np.int64, rows * cols).reshape(rows, cols)

    def __reduce__(self):
        return (_attach, (self._region,))

    # ------------------------------------------------------------------ writers
    def _row(self) -> np.ndarray:
        info = get_worker_info()
        if info is None:
            return self._rows[0]
        return self._rows[1 + info.id % self.max_workers]

    def record_items(self, hits: Sequence[int], misses: Sequence[int], *,
                     fallbacks: int = 0, store_bytes: int = 0) -> None:
        """Count one batch of items delivered by this process.

        Args:
            hits: items served from the shared cache, per plan tier
                ``(none, h, l)``.
            misses: items read from the source, per plan tier ``(none, h, l)``.
            fallbacks: items the plan placed in the cache whose bytes were gone.
            store_bytes: bytes copied out of the shared cache.
        """
        row = self._row()
        row[_BATCHES] += 1
        for tier in range(3):
            if hits[tier]:
                row[_HITS + tier] += int(hits[tier])
            if misses[tier]:
                row[_MISSES + tier] += int(misses[tier])
        if fallbacks:
            row[_FALLBACKS] += int(fallbacks)
        if store_bytes:
            row[_STORE_BYTES] += int(store_bytes)

    def record_source(self, samples: int, nbytes: int, seconds: float) -> None:
        """Count one ``read_many`` call of ``samples`` records, ``nbytes`` bytes, taking
        ``seconds``."""
        row = self._row()
        row[_REQUESTS] += 1
        row[_SAMPLES] += int(samples)
        row[_BYTES] += int(nbytes)
        row[_NS] += int(seconds * 1e9)
        row[_LAT0 + bucket_of(seconds)] += 1

    def read_source(self, source: Any, indices: Any) -> List[Any]:
        """``source.read_many(indices)``, counted."""
        start = time.perf_counter()
        raws = source.read_many(indices)
        self.record_source(len(raws), sum(len(r) for r in raws),
                           time.perf_counter() - start)
        return raws

    # ------------------------------------------------------------------ readers
    # (after close() in this process they see zeros)
    def totals(self) -> Dict[str, int]:
        """Every scalar count summed over all processes (``source_ns`` in nanoseconds)."""
        if self.closed:
            return dict.fromkeys(SCALARS, 0)
        sums = self._rows[:, :_LAT0].sum(axis=0)
        return {name: int(v) for name, v in zip(SCALARS, sums)}

    def latency_counts(self) -> List[int]:
        """Source-request counts per latency bucket (``len(BUCKETS) + 1``), all processes."""
        if self.closed:
            return [0] * (len(BUCKETS) + 1)
        return [int(v) for v in
                self._rows[:, _LAT0:_LAT0 + len(BUCKETS) + 1].sum(axis=0)]

    def stats(self) -> Dict[str, Any]:
        """Totals under the ``worker_*`` keys of ``ImpactLoader.stats()``.

        ``worker_store_hits`` / ``worker_source_reads``: items served from the cache /
        read from the source; ``worker_fallbacks``: items planned in the cache but read
        from the source; ``worker_source_requests`` / ``_samples`` / ``_bytes`` /
        ``_seconds``: every ``read_many`` the dataset made. Row 0 (the main process)
        is included: with ``num_workers=0`` it does all the reading.
        """
        t = self.totals()
        return {"worker_batches": t["batches"],
                "worker_store_hits": t["hits_none"] + t["hits_h"] + t["hits_l"],
                "worker_store_bytes": t["store_bytes"],
                "worker_source_reads": t["misses_none"] + t["misses_h"] + t["misses_l"],
                "worker_fallbacks": t["fallbacks"],
                "worker_source_requests": t["source_requests"],
                "worker_source_samples": t["source_samples"],
                "worker_source_bytes": t["source_bytes"],
                "worker_source_seconds": t["source_ns"] / 1e9}


def _attach(region: SharedRegion) -> WorkerCounters:
    """Rebuild the counters around a region received from another process."""
    counters = WorkerCounters.__new__(WorkerCounters)
    counters._setup(region)
    return counters
