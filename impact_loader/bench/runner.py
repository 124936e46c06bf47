"""Runs a scenario: data set-up, compute measurement, then every loader side by side.

Set-up (writing the built-in dataset once, measuring the step's own speed), warm-up
(the first ``scenario.warmup`` epochs of each loader) and measurement (the median of
the rest) are separate. Loaders take turns epoch by epoch, so a change of machine load
hits all of them alike.
"""

from __future__ import annotations

import os
from typing import Any, Callable, Dict, List, Tuple

import numpy as np
import torch

from .._writing import progress_bar
from ..detect import open_source
from ..errors import ImpactLoaderError
from ..lmdb_source import LMDBSource, write_lmdb
from ..synthetic import synthetic_samples
from .figures import add_ratios, check_targets, summarize
from .run import LoaderRun
from .scenario import Scenario
from .task import CLASSES, FEATURES, ModelTask, StandInTask, synthetic_test_set, to_size, to_xy

__all__ = ["run_scenario", "default_data_dir", "prepare_builtin"]


def default_data_dir() -> str:
    """``$XDG_CACHE_HOME/impact-loader/bench`` (``~/.cache/...``): reused across runs."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache")
    return os.path.join(base, "impact-loader", "bench")


def prepare_builtin(scenario: Scenario, progress: bool = True) -> str:
    """Write the built-in dataset (or find it from an earlier run); return its path."""
    data_dir = scenario.data_dir or default_data_dir()
    os.makedirs(data_dir, exist_ok=True)
    path = os.path.join(data_dir, f"synthetic-n{scenario.samples}-r{scenario.record_bytes}"
                                  f"-s{scenario.seed}.lmdb")
    if os.path.exists(path):
        try:
            src = LMDBSource(path)
            try:
                if len(src) == scenario.samples:
                    return path
            finally:
                src.close()
        except ImpactLoaderError:
            pass  # unreadable or partial: write it again
    write_lmdb(path, synthetic_samples(scenario.samples, record_bytes=scenario.record_bytes,
                                       features=FEATURES, classes=CLASSES,
                                       seed=scenario.seed),
               overwrite=True, progress=progress)
    return path


def _mean_record(path: str) -> Tuple[int, float]:
    src = open_source(path)
    try:
        n = len(src)
        if n == 0:
            raise ValueError(f"{path} holds no samples; benchmark a non-empty dataset")
        probe = np.unique(np.linspace(0, n - 1, min(n, 64)).astype(np.int64))
        return n, float(np.mean([len(r) for r in src.read_many(probe)]))
    finally:
        getattr(src, "close", lambda: None)()


def _warm(path: str) -> None:
    """Read the whole dataset once so that ``local`` storage starts with a warm cache."""
    src = open_source(path)
    try:
        n = len(src)
        for a in range(0, n, 4096):
            src.read_many(range(a, min(a + 4096, n)))
    finally:
        getattr(src, "close", lambda: None)()


def run_scenario(scenario: Scenario, *, progress: bool = True,
                 log: Callable[[str], None] = print) -> Dict[str, Any]:
    """Run every loader of ``scenario`` at each cache fraction; return the report dict.

    The report holds the set-up figures and, per cache fraction, one row per loader
    (see :func:`summarize`) plus the end-to-end targets measured on ``impact``.
    """
    from ..cache.config import DEFAULT_PACKAGE_SIZE

    builtin = scenario.source is None
    path = prepare_builtin(scenario, progress) if builtin else scenario.source
    n, record = _mean_record(path)
    if scenario.storage.name == "local":
        _warm(path)

    def make_task() -> Any:
        if builtin:
            test = synthetic_test_set(n, scenario.test_samples,
                                      record_bytes=scenario.record_bytes,
                                      seed=scenario.seed) if scenario.test_samples else None
            return ModelTask(seed=scenario.seed, compute_ms=scenario.compute_ms, test=test)
        return StandInTask(n, seed=scenario.seed, compute_ms=scenario.compute_ms)

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # workers + the loop share the cores; keep compute steady
    try:
        # The compute term of the bound is the step's own speed. It is measured before
        # and again after each fraction's epochs, and the fastest measurement is used:
        # a host stall during one measurement must not inflate the bound.
        probe = make_task()
        measured = [probe.samples_per_second(scenario.batch_size)]
        log(f"data: {path} ({n} samples, {record:.0f} bytes each on average); "
            f"storage: {scenario.storage.describe()}; compute alone "
            f"{measured[0]:.0f} samples/s")
        report: Dict[str, Any] = {"data": path, "samples": n, "record_bytes": record,
                                  "compute_samples_per_s": measured[0],
                                  "compute_measurements": measured, "runs": []}
        transform = to_xy if builtin else to_size
        for fraction in scenario.cache_fractions:
            cache_bytes = int(fraction * n * record)
            runs: List[LoaderRun] = []
            try:
                for name in scenario.loaders:
                    runs.append(LoaderRun(name, scenario, lambda: open_source(path),
                                          cache_bytes, make_task(), transform))
                _epochs(runs, scenario, fraction, n, progress, log)
                measured.append(probe.samples_per_second(scenario.batch_size))
                x_compute = report["compute_samples_per_s"] = max(measured)
                log(f"compute alone, measured again: {measured[-1]:.0f} samples/s; "
                    f"the bound uses the fastest, {x_compute:.0f}")
                rows = [summarize(r, scenario, n=n, record=record, x_compute=x_compute,
                                  package=DEFAULT_PACKAGE_SIZE,
                                  accuracy=r.task.accuracy()) for r in runs]
            finally:
                for r in runs:
                    r.close()
            add_ratios(rows)
            report["runs"].append({"cache_fraction": fraction, "cache_bytes": cache_bytes,
                                   "rows": rows, "targets": check_targets(rows)})
        return report
    finally:
        torch.set_num_threads(threads)


def _epochs(runs: List[LoaderRun], scenario: Scenario, fraction: float, n: int,
            progress: bool, log: Callable[[str], None]) -> None:
    """All epochs of all loaders, taking turns, with one progress bar per epoch."""
    for epoch in range(scenario.epochs):
        for run in runs:
            tag = "warm-up" if epoch < scenario.warmup else "measured"
            bar = progress_bar(progress, f"cache {fraction:.0%} {run.name:>7s} epoch "
                                         f"{epoch + 1}/{scenario.epochs}", total=n)
            try:
                rec = run.run_epoch(epoch, bar)
            finally:
                bar.close()
            line = (f"  {run.name:7s} epoch {epoch + 1} ({tag}): {rec['seconds']:6.2f} s, "
                    f"trained {rec['trained_fraction']:.0%}, "
                    f"data-wait {rec['data_wait_s'] / rec['seconds']:.0%}")
            log(line)
