"""Measuring instruments of the benchmark: storage traffic, time in a call, CPU time.

Everything here observes; nothing changes what the loaders do.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import platform
import resource
import subprocess
import sys
import threading
import time
from datetime import datetime, timezone
from typing import Any, Callable, Dict, List

from torch.utils.data import get_worker_info

from ..throttle import count_runs

_TICK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100

__all__ = ["CountingSource", "Timed", "cpu_seconds", "other_threads_cpu_seconds",
           "environment", "COUNTERS"]

COUNTERS = ("main_calls", "main_runs", "main_bytes", "worker_calls", "worker_runs",
            "worker_bytes")


class CountingSource:
    """Source wrapper counting the storage traffic of every process in shared memory.

    A throttle counts per process, so the reads DataLoader workers do (all of the plain
    DataLoader's, and impact-loader's fallback reads) would be invisible from the main
    process. These counters live in shared memory made before the workers start, so
    forked workers inherit them; under spawn the counters are pickled with the
    dataset, so pass ``context`` matching the DataLoader's start method.

    Args:
        source: the source whose ``read_many`` calls are counted.
        context: multiprocessing start method of the DataLoader workers.
    """

    def __init__(self, source: Any, context: str = "fork") -> None:
        ctx = mp.get_context(context)
        self.source = source
        self._counts = ctx.RawArray("q", len(COUNTERS))
        self._lock = ctx.Lock()

    def __len__(self) -> int:
        return len(self.source)

    def read_many(self, indices: Any) -> Any:
        """``source.read_many``, counting calls, contiguous runs and bytes."""
        out = self.source.read_many(indices)
        # The prefetcher's reads (the main process, or its cache service process)
        # against the DataLoader workers'.
        base = 3 if get_worker_info() is not None else 0
        runs, nbytes = count_runs(indices), sum(len(r) for r in out)
        with self._lock:
            self._counts[base] += 1
            self._counts[base + 1] += runs
            self._counts[base + 2] += nbytes
        return out

    def decode(self, raw: Any) -> Any:
        """``source.decode``."""
        return self.source.decode(raw)

    def snapshot(self) -> Dict[str, int]:
        """Counts so far, by name (see :data:`COUNTERS`)."""
        with self._lock:
            return dict(zip(COUNTERS, self._counts[:]))


class Timed:
    """Wraps a callable and sums the wall seconds (``seconds``) and the calling thread's
    CPU seconds (``cpu_seconds``) spent in it. They differ by the time the thread waited,
    e.g. for the GIL while background threads ran."""

    def __init__(self, fn: Callable[..., Any]) -> None:
        self.fn, self.seconds, self.cpu_seconds, self.calls = fn, 0.0, 0.0, 0

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        start, cpu = time.perf_counter(), time.thread_time()
        try:
            return self.fn(*args, **kwargs)
        finally:
            self.seconds += time.perf_counter() - start
            self.cpu_seconds += time.thread_time() - cpu
            self.calls += 1


def _stat_cpu_ticks(path: str) -> int:
    """utime + stime (clock ticks) from a ``/proc/.../stat`` file; 0 if it is gone."""
    try:
        with open(path, "rb") as fh:
            fields = fh.read().rsplit(b")", 1)[1].split()
    except OSError:
        return 0  # the thread or process exited meanwhile
    return int(fields[11]) + int(fields[12])  # utime, stime (fields 14, 15)


def _live_children() -> List[int]:
    """Pids of this process's running children (Linux; empty elsewhere)."""
    pids: List[int] = []
    try:
        tids = os.listdir("/proc/self/task")
    except OSError:
        return pids
    for tid in tids:
        try:
            with open(f"/proc/self/task/{tid}/children") as fh:
                pids.extend(int(p) for p in fh.read().split())
        except OSError:
            continue
    return pids


def cpu_seconds() -> tuple:
    """(CPU seconds of this process, all threads; of its children, e.g. workers).

    Children count whether they were reaped (``RUSAGE_CHILDREN``) or still run
    (``/proc/<pid>/stat``: persistent DataLoader workers), so a difference of two calls
    is the children's CPU in between either way.
    """
    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    live = sum(_stat_cpu_ticks(f"/proc/{pid}/stat") for pid in _live_children())
    return time.process_time(), ru.ru_utime + ru.ru_stime + live / _TICK


def other_threads_cpu_seconds() -> float:
    """CPU seconds of this process's threads other than the calling one (Linux).

    The training step runs on the calling thread; the prefetcher's threads are the
    others, so this isolates the loader's background work. Threads that have exited
    are not counted. Returns NaN where ``/proc`` is not available.
    """
    me = threading.get_native_id()
    try:
        tids = os.listdir("/proc/self/task")
    except OSError:
        return float("nan")
    total = sum(_stat_cpu_ticks(f"/proc/self/task/{tid}/stat")
                for tid in tids if int(tid) != me)
    return total / _TICK


def environment() -> Dict[str, Any]:
    """Date, machine and versions, for the record of a run."""
    import torch

    import impact_loader as il

    where = os.path.dirname(os.path.abspath(il.__file__))
    try:
        commit = subprocess.run(["git", "-C", where, "describe", "--always", "--dirty"],
                                capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        commit = ""
    return {"date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "impact_loader": il.__version__, "git": commit or None,
            "torch": torch.__version__, "python": sys.version.split()[0],
            "platform": platform.platform(), "cpu_count": os.cpu_count(),
            "load_average": os.getloadavg()}
