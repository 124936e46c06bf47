"""What slows the training step down when the loader's work runs beside it.

The reference scenario's step (``impact-bench``'s MLP on a batch of 128, without its
sleep) is timed alone and then, in the same run, beside each kind of competitor:

- a Python thread of the same process that keeps the GIL busy (what the prefetcher's
  annotator and reader threads are while they work), at several GIL switch intervals;
- other processes that keep cores busy (what DataLoader workers are), with torch using
  1 thread or the default number.

Ratios are to the step alone with the same torch thread count. ::

    python benchmarks/step_contention.py
    python benchmarks/step_contention.py --steps 400 --intervals-ms 5,0.5
"""

from __future__ import annotations

import argparse
import multiprocessing
import sys
import threading
import time
from typing import Callable, List, Optional

import torch

from impact_loader.bench.task import CLASSES, FEATURES, ModelTask


def _time_steps(step: Callable[[], object], steps: int) -> float:
    """Milliseconds per step, the faster of two rounds (a host stall hits one)."""
    best = float("inf")
    for _ in range(2):
        t = time.perf_counter()
        for _ in range(steps):
            step()
        best = min(best, (time.perf_counter() - t) / steps * 1e3)
    return best


def _busy_python(stop: threading.Event) -> None:
    while not stop.is_set():
        sum(range(64))  # short bytecode loops: the GIL is held and handed over normally


def _spin() -> None:
    while True:
        pass


def measure(steps: int, batch_size: int, intervals_ms: List[float]) -> List[tuple]:
    """Rows ``(torch threads, competitor, ms per step, ms per step alone)``."""
    task = ModelTask(seed=0, compute_ms=0)
    batch = (torch.randn(batch_size, FEATURES), torch.randint(0, CLASSES, (batch_size,)))
    idx = torch.arange(batch_size)

    def step() -> None:
        task.step(batch, None, 0, idx)

    default_threads, default_interval = torch.get_num_threads(), sys.getswitchinterval()
    rows = []
    for threads in sorted({1, default_threads}):
        torch.set_num_threads(threads)
        _time_steps(step, max(10, steps // 10))  # warm up
        alone = _time_steps(step, steps)
        rows.append((threads, "alone", alone, alone))
        for ms in intervals_ms:
            sys.setswitchinterval(ms / 1e3)
            stop = threading.Event()
            busy = threading.Thread(target=_busy_python, args=(stop,), daemon=True)
            busy.start()
            try:
                rows.append((threads, f"a busy Python thread, switch interval {ms:g} ms",
                             _time_steps(step, steps), alone))
            finally:
                stop.set()
                busy.join()
                sys.setswitchinterval(default_interval)
        spinners = []
        try:
            for k in (1, 2):
                proc = multiprocessing.get_context("fork").Process(target=_spin,
                                                                    daemon=True)
                proc.start()
                spinners.append(proc)
                rows.append((threads, f"{k} busy process{'es' if k > 1 else ''}",
                             _time_steps(step, steps), alone))
        finally:
            for proc in spinners:
                proc.terminate()
                proc.join()
    torch.set_num_threads(default_threads)
    return rows


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer >= 1")
    return value


def _intervals(text: str) -> List[float]:
    try:
        values = [float(x) for x in text.split(",")]
    except ValueError:
        values = []
    if not values or not all(0 < v < 1e6 for v in values):
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a comma-separated list of milliseconds > 0, e.g. 5,1,0.1")
    return values


def main(argv: Optional[List[str]] = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--steps", type=_positive_int, default=100,
                   help="steps per measurement (default: 100)")
    p.add_argument("--batch-size", type=_positive_int, default=128,
                   help="samples per step (default: 128)")
    p.add_argument("--intervals-ms", type=_intervals, default=[5.0, 1.0, 0.1],
                   metavar="MS[,MS...]",
                   help="GIL switch intervals to try beside the busy thread "
                        "(milliseconds; default: 5,1,0.1; Python's default is 5)")
    args = p.parse_args(argv)
    rows = measure(args.steps, args.batch_size, args.intervals_ms)
    print(f"training step of impact-bench's task, batch {args.batch_size}, "
          f"{args.steps} steps per figure (ms per step; ratio to alone)")
    for threads, what, ms, alone in rows:
        print(f"  torch threads {threads}  {what:45s} {ms:8.2f} ms  {ms / alone:6.2f}x")


if __name__ == "__main__":
    main()
