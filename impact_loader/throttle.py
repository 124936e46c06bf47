"""ThrottledSource: emulated remote storage for benchmarks and experiments.

Model of one ``read_many`` call (one client request stream):

* it waits for one of ``max_inflight`` request slots (requests beyond that queue, as
  on a server or device with a fixed queue depth);
* it pays ``latency_ms`` once per contiguous run of indices *in request order*
  (``[4, 5, 6, 9]`` is two runs: a sequential read is one request, a random read is many);
* its bytes then cross one shared link of ``bandwidth_mb_s``: transfers of concurrent
  calls are serialised on the link, so the aggregate never exceeds the bandwidth.

The time the wrapped source really took counts toward the emulated time (the call sleeps
only for the remainder), so a slow inner source is not penalised twice.

Multi-process use: slots and the link are shared by the threads of one process. A
process that unpickles a ThrottledSource (a spawn/forkserver DataLoader worker, or a
forked one) gets its own slots and link, so N worker processes see N times the
bandwidth and queue depth. To emulate a node-wide limit with N reader processes, give
each ``bandwidth_mb_s / N`` and ``max(1, max_inflight // N)``. impact-loader's own
prefetcher reads from the main process only, where the limits hold exactly.
"""

from __future__ import annotations

import os
import threading
import time
from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Sequence

import numpy as np

__all__ = ["ThrottledSource", "StorageProfile", "PROFILES", "count_runs"]


@dataclass(frozen=True)
class StorageProfile:
    """Figures of one kind of storage.

    Attributes:
        latency_ms: time to first byte of one request, milliseconds.
        bandwidth_mb_s: sustained transfer rate, MB/s (10^6 bytes per second).
        max_inflight: requests served at once (queue depth / parallel connections).
        note: where the figures come from.
    """

    latency_ms: float
    bandwidth_mb_s: float
    max_inflight: int
    note: str


PROFILES: Dict[str, StorageProfile] = {
    "local-ssd": StorageProfile(
        0.1, 2000.0, 32,
        "NVMe SSD: ~100 us 4 KiB random-read latency at low queue depth, ~2 GB/s "
        "sequential (typical PCIe 3.0 x4 datasheet figures)."),
    "nfs": StorageProfile(
        4.0, 100.0, 8,
        "A modest network file system: ~4 ms per request round trip through client, "
        "network and server, ~1 GbE payload rate (~100 MB/s), 8 outstanding RPCs. "
        "The reference I/O-bound scenario of impact-loader's benchmarks."),
    "object-store": StorageProfile(
        25.0, 400.0, 64,
        "S3-like object store: tens of ms to first byte per GET (AWS's performance "
        "guidelines describe 100-200 ms tails for small objects; medians are lower), "
        "high aggregate throughput across many parallel connections."),
    "hdd": StorageProfile(
        12.0, 150.0, 1,
        "7200 rpm disk: ~8 ms average seek + ~4 ms half rotation per random read, "
        "~150 MB/s sequential, one head."),
}


def count_runs(indices: Sequence[int]) -> int:
    """Number of contiguous ascending runs in ``indices`` taken in request order."""
    arr = np.asarray(indices, dtype=np.int64)
    if arr.size == 0:
        return 0
    return int(np.count_nonzero(np.diff(arr) != 1)) + 1


class ThrottledSource:
    """Wraps a source so that reads cost what they would on slower storage.

    Args:
        source: any Source.
        latency_ms: per-request latency in milliseconds (>= 0).
        bandwidth_mb_s: link bandwidth in MB/s (> 0; ``float("inf")`` for no limit).
        max_inflight: calls served at once (>= 1).
        profile: name in :data:`PROFILES`; explicit arguments override its figures.

    Raises:
        ValueError: a figure is out of range or the profile name is unknown.
    """

    def __init__(self, source: Any, latency_ms: Optional[float] = None,
                 bandwidth_mb_s: Optional[float] = None,
                 max_inflight: Optional[int] = None, *,
                 profile: Optional[str] = None) -> None:
        base = None
        if profile is not None:
            if profile not in PROFILES:
                raise ValueError(f"profile={profile!r} is unknown; choose one of "
                                 f"{sorted(PROFILES)}")
            base = PROFILES[profile]
        self.latency_ms = float(latency_ms if latency_ms is not None
                                else base.latency_ms if base else 0.0)
        self.bandwidth_mb_s = float(bandwidth_mb_s if bandwidth_mb_s is not None
                                    else base.bandwidth_mb_s if base else float("inf"))
        self.max_inflight = int(max_inflight if max_inflight is not None
                                else base.max_inflight if base else 8)
        if not self.latency_ms >= 0:
            raise ValueError(f"latency_ms={latency_ms} must be >= 0 milliseconds")
        if not self.bandwidth_mb_s > 0:
            raise ValueError(f"bandwidth_mb_s={bandwidth_mb_s} must be > 0 MB/s; pass "
                             "float('inf') for an unlimited link")
        if self.max_inflight < 1:
            raise ValueError(f"max_inflight={max_inflight} must be >= 1 request")
        self.source = source
        self._now = time.perf_counter  # replaceable by tests with a simulated clock
        self._sleep = time.sleep
        self._init_process_state()

    def _init_process_state(self) -> None:
        self._pid = os.getpid()
        self._slots = threading.BoundedSemaphore(self.max_inflight)
        self._link = threading.Lock()
        self._link_free_at = 0.0
        self._counters = threading.Lock()
        self.requests = 0  # contiguous runs served, in this process
        self.calls = 0
        self.bytes_read = 0

    def _state(self) -> None:
        if self._pid != os.getpid():  # forked: the parent's locks may be held
            self._init_process_state()

    def __getstate__(self) -> dict:
        return {k: getattr(self, k) for k in
                ("source", "latency_ms", "bandwidth_mb_s", "max_inflight")}

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self._now, self._sleep = time.perf_counter, time.sleep
        self._init_process_state()

    def __len__(self) -> int:
        return len(self.source)

    def read_many(self, indices: Sequence[int]) -> List[bytes]:
        """Read through the wrapped source, then sleep to the emulated finish time."""
        self._state()
        with self._slots:
            start = self._now()
            out = self.source.read_many(indices)
            runs = count_runs(indices)
            nbytes = sum(len(r) for r in out)
            ready = start + runs * self.latency_ms / 1e3
            with self._link:
                begin = max(ready, self._link_free_at)
                done = begin + nbytes / (self.bandwidth_mb_s * 1e6)
                self._link_free_at = done
            with self._counters:
                self.calls += 1
                self.requests += runs
                self.bytes_read += nbytes
            delay = done - self._now()
            if delay > 0:
                self._sleep(delay)
        return out

    def decode(self, raw: Any) -> Any:
        """Decode with the wrapped source."""
        return self.source.decode(raw)

    def files(self) -> List[str]:
        """Data files of the wrapped source (empty if it has none)."""
        files = getattr(self.source, "files", None)
        return list(files()) if files else []

    def close(self) -> None:
        """Close the wrapped source if it can be closed."""
        close = getattr(self.source, "close", None)
        if close:
            close()

    def __repr__(self) -> str:
        return (f"ThrottledSource({self.source!r}, latency_ms={self.latency_ms}, "
                f"bandwidth_mb_s={self.bandwidth_mb_s}, max_inflight={self.max_inflight})")
