"""The reference I/O-bound scenario: impact-loader against a plain DataLoader, end to end.

A synthetic 10-class task (overlapping Gaussian clusters, 5% label noise) of ``--samples``
records of about 8 KiB, stored in an LMDB and read through a ``ThrottledSource``
(``--latency-ms`` per request, 100 MB/s, 8 requests in flight: the "nfs" profile). Each
training step runs a small MLP on CPU for per-sample losses, reports them, and sleeps
10 ms in place of the accelerator. Loaders, side by side in one run, one epoch of each in
turn (so a change of machine load hits all of them alike):

    plain          torch DataLoader + RandomSampler over the same source, no cache
    uniform-lru    ImpactLoader policy="uniform", cache_policy="lru"
    uniform-minio  ImpactLoader policy="uniform", cache_policy="minio"
    impact         ImpactLoader defaults: policy="impact", cache_policy="importance"

Setup (data written once and reused, compute rate measured in memory), warm-up (epochs
before ``--warmup``) and measurement (the median of the remaining epochs) are separate.
Every figure is reported raw and as a ratio; the physical bound is DESIGN.md's "The
physical limit" computed from each loader's measured h, f and mean request run length.

    python benchmarks/reference.py                      # the reference run (minutes)
    python benchmarks/reference.py --quick              # smoke run on small data
    python benchmarks/reference.py --easy --json out.json
"""

from __future__ import annotations

import argparse
import json
import math
import multiprocessing as mp
import os
import resource
import statistics
import sys
import time
from itertools import islice
from typing import Any, Dict, List, Optional

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, RandomSampler

import impact_loader as il
from impact_loader.synthetic import synthetic_samples
from impact_loader.throttle import count_runs

# name -> (selection policy, cache policy); policy None: the plain DataLoader baseline.
LOADERS = {
    "plain": (None, None),
    "uniform-lru": ("uniform", "lru"),
    "uniform-minio": ("uniform", "minio"),
    "impact": ("impact", "importance"),
}
FEATURES, CLASSES = 64, 10
COUNTERS = ("main_calls", "main_runs", "main_bytes", "worker_calls", "worker_runs",
            "worker_bytes")


# ---------------------------------------------------------------- data path pieces
def to_xy(sample: dict) -> tuple:
    """Decoded sample -> (features tensor, label); runs in the DataLoader workers."""
    return torch.from_numpy(sample["x"]), sample["label"]


class PlainDataset:
    """Baseline map-style dataset: one ``read_many([i])`` per item, decode, transform."""

    def __init__(self, source: Any) -> None:
        self.source = source

    def __len__(self) -> int:
        return len(self.source)

    def __getitem__(self, i: int) -> tuple:
        raw = self.source.read_many([i])[0]
        return to_xy(self.source.decode(bytearray(raw))), i


class CountingSource:
    """Source wrapper counting the storage traffic of every process in shared memory.

    ThrottledSource counts per process, so reads done inside DataLoader workers (the
    baseline's, and impact-loader's fallback reads) would be invisible from the main
    process; these counters are inherited by forked workers.
    """

    def __init__(self, source: Any, context: str) -> None:
        ctx = mp.get_context(context)
        self.source = source
        self._counts = ctx.RawArray("q", len(COUNTERS))
        self._lock = ctx.Lock()
        self._main = os.getpid()

    def __len__(self) -> int:
        return len(self.source)

    def read_many(self, indices):
        out = self.source.read_many(indices)
        base = 0 if os.getpid() == self._main else 3
        runs, nbytes = count_runs(indices), sum(len(r) for r in out)
        with self._lock:
            self._counts[base] += 1
            self._counts[base + 1] += runs
            self._counts[base + 2] += nbytes
        return out

    def decode(self, raw):
        return self.source.decode(raw)

    def snapshot(self) -> Dict[str, int]:
        with self._lock:
            return dict(zip(COUNTERS, self._counts[:]))


def cpu_seconds() -> tuple:
    """(CPU of this process, all threads; CPU of reaped children, e.g. finished workers)."""
    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    return time.process_time(), ru.ru_utime + ru.ru_stime


class Timed:
    """Wraps a callable and sums the seconds spent in it (benchmark instrumentation)."""

    def __init__(self, fn) -> None:
        self.fn, self.seconds, self.calls = fn, 0.0, 0

    def __call__(self, *args, **kwargs):
        start = time.perf_counter()
        try:
            return self.fn(*args, **kwargs)
        finally:
            self.seconds += time.perf_counter() - start
            self.calls += 1


# ---------------------------------------------------------------- setup
def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description="Reference I/O-bound scenario: plain DataLoader vs impact-loader "
                    "(uniform+LRU, uniform+MinIO, default impact+importance) on emulated "
                    "network storage, side by side in one run.",
        epilog="Example: python benchmarks/reference.py --loaders plain,impact --json r.json",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--samples", type=int, default=20_000, help="records in the dataset")
    p.add_argument("--record-bytes", type=int, default=8192, help="bytes per record")
    p.add_argument("--epochs", type=int, default=7, help="epochs per loader (total)")
    p.add_argument("--warmup", type=int, default=2,
                   help="leading epochs not measured (the median is over the rest)")
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--workers", type=int, default=2, help="DataLoader workers")
    p.add_argument("--latency-ms", type=float, default=4.0, help="per-request latency")
    p.add_argument("--bandwidth-mb-s", type=float, default=100.0, help="link bandwidth")
    p.add_argument("--inflight", type=int, default=8, help="requests served at once")
    p.add_argument("--cache-fraction", type=float, default=0.2,
                   help="cache bytes as a share of the dataset bytes")
    p.add_argument("--staging-mib", type=float, default=None,
                   help="staging_bytes of impact-loader's cache in MiB (default: the "
                        "library default)")
    p.add_argument("--warmup-epochs", type=int, default=None,
                   help="sampler warmup_epochs for 'impact' (default: library default)")
    p.add_argument("--step-sleep-ms", type=float, default=10.0,
                   help="sleep per step standing in for the accelerator")
    p.add_argument("--test-samples", type=int, default=2000, help="held-out test set")
    p.add_argument("--loaders", default=",".join(LOADERS),
                   help=f"comma-separated subset of {','.join(LOADERS)}")
    p.add_argument("--data-dir", default=os.path.expanduser("~/.cache/impact-loader/bench"),
                   help="where the LMDB is written once and reused")
    p.add_argument("--start-method", default="fork", help="DataLoader worker start method")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--easy", action="store_true",
                   help="also run the not-I/O-bound case: warm local LMDB, no throttle, "
                        "cache holds everything")
    p.add_argument("--quick", action="store_true",
                   help="smoke run defaults: 1024 samples, 3 epochs, 1 ms latency, 200 test "
                        "samples (explicit options override them)")
    p.add_argument("--json", metavar="PATH", help="write every figure to PATH as JSON")
    if p.parse_known_args(argv)[0].quick:  # smaller defaults; explicit flags still win
        p.set_defaults(samples=1024, epochs=3, latency_ms=1.0, test_samples=200)
    args = p.parse_args(argv)
    names = [n.strip() for n in args.loaders.split(",") if n.strip()]
    unknown = sorted(set(names) - set(LOADERS))
    if unknown or not names:
        p.error(f"--loaders {args.loaders!r}: unknown {unknown}; choose from "
                f"{','.join(LOADERS)}")
    args.loaders = names
    if args.epochs <= args.warmup:
        p.error(f"--epochs={args.epochs} must exceed --warmup={args.warmup} so that "
                "some epochs are measured")
    return args


def prepare_data(args) -> tuple:
    """Write (or reuse) the LMDB; return its path, record size and the test tensors."""
    os.makedirs(args.data_dir, exist_ok=True)
    path = os.path.join(args.data_dir, f"reference-n{args.samples}-r{args.record_bytes}"
                                       f"-s{args.seed}.lmdb")
    src = None
    if os.path.exists(path):
        try:
            src = il.LMDBSource(path)
            if len(src) != args.samples:
                src = None
        except il.ImpactLoaderError:
            src = None
    if src is None:
        print(f"writing {args.samples} records to {path} ...", flush=True)
        src = il.write_lmdb(path, synthetic_samples(
            args.samples, record_bytes=args.record_bytes, features=FEATURES,
            classes=CLASSES, seed=args.seed), overwrite=True)
    probe = np.unique(np.linspace(0, args.samples - 1, 64).astype(np.int64))
    record = float(np.mean([len(r) for r in src.read_many(probe)]))
    src.close()
    # Same generator (same class centres), samples after the training set: held out.
    test = list(islice(synthetic_samples(args.samples + args.test_samples,
                                         record_bytes=args.record_bytes, features=FEATURES,
                                         classes=CLASSES, seed=args.seed),
                       args.samples, None))
    x = torch.from_numpy(np.stack([s["x"] for s in test]))
    y = torch.tensor([s["label"] for s in test])
    return path, record, (x, y)


def make_model(seed: int):
    torch.manual_seed(seed)
    model = torch.nn.Sequential(torch.nn.Linear(FEATURES, 128), torch.nn.ReLU(),
                                torch.nn.Linear(128, CLASSES))
    return model, torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)


def train_step(model, opt, x, y, weights=None):
    """One real optimisation step; returns the per-sample losses (detached)."""
    losses = F.cross_entropy(model(x), y, reduction="none")
    loss = losses.mean() if weights is None else (losses * weights).mean()
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
    return losses.detach()


def measure_compute(args, steps: int = 40, warm: int = 5) -> float:
    """Samples/s of the training step alone (model + sleep), batches in memory."""
    model, opt = make_model(args.seed)
    x = torch.randn(args.batch_size, FEATURES)
    y = torch.randint(0, CLASSES, (args.batch_size,))
    for _ in range(warm):
        train_step(model, opt, x, y)
        time.sleep(args.step_sleep_ms / 1e3)
    start = time.perf_counter()
    for _ in range(steps):
        train_step(model, opt, x, y)
        time.sleep(args.step_sleep_ms / 1e3)
    return steps * args.batch_size / (time.perf_counter() - start)


# ---------------------------------------------------------------- one loader
class Run:
    """One loader with its own source stack, dataset, model and counters."""

    def __init__(self, name: str, args, path: str, cache_bytes: int,
                 throttled: bool) -> None:
        self.name, self.args = name, args
        self.policy, self.cache_policy = LOADERS[name]
        self.lmdb = il.LMDBSource(path)
        self.throttle = (il.ThrottledSource(self.lmdb, latency_ms=args.latency_ms,
                                            bandwidth_mb_s=args.bandwidth_mb_s,
                                            max_inflight=args.inflight)
                         if throttled else None)
        self.source = CountingSource(self.throttle or self.lmdb, args.start_method)
        kw: Dict[str, Any] = dict(num_workers=args.workers)
        if args.workers > 0:
            kw["multiprocessing_context"] = args.start_method
        self.pipeline = None
        if self.policy is None:
            self.dataset = PlainDataset(self.source)
            gen = torch.Generator().manual_seed(args.seed)
            self.loader = DataLoader(self.dataset, batch_size=args.batch_size,
                                     sampler=RandomSampler(self.dataset, generator=gen),
                                     **kw)
        else:
            options = {}
            if args.staging_mib is not None:
                options["staging_bytes"] = int(args.staging_mib * 2**20)
            self.dataset = il.ImpactDataset(self.source, transform=to_xy,
                                            cache_bytes=cache_bytes,
                                            cache_policy=self.cache_policy, **options)
            sampler_options = {}
            if args.warmup_epochs is not None and self.policy == "impact":
                sampler_options["warmup_epochs"] = args.warmup_epochs
            self.loader = il.ImpactLoader(self.dataset, args.batch_size,
                                          policy=self.policy, seed=args.seed,
                                          sampler_options=sampler_options, **kw)
            self.pipeline = self.dataset.pipeline
            # Instrumentation: time in the annotator (main process, inside next()) and
            # the part of it spent waiting for the batch's own prefetch reads.
            self.annotate = Timed(self.loader.sampler.annotator)
            self.loader.sampler.annotator = self.annotate
            self.wait = Timed(self.pipeline.prefetcher.wait)
            self.pipeline.prefetcher.wait = self.wait
        self.model, self.opt = make_model(args.seed)
        self.epochs: List[Dict[str, Any]] = []

    def _counters(self) -> Dict[str, float]:
        c: Dict[str, float] = dict(self.source.snapshot())
        if self.throttle is not None:
            c.update(throttle_requests=self.throttle.requests,
                     throttle_bytes=self.throttle.bytes_read)
        if self.pipeline is not None:
            s = self.loader.stats()
            for k in ("planned", "hits", "substitutions", "prefetched", "waited_batches",
                      "storage_requests", "storage_bytes", "storage_seconds"):
                c[k] = s[k]
            c.update(annotate_s=self.annotate.seconds, prefetch_wait_s=self.wait.seconds)
            d = self.dataset.directory.counts
            for k in ("admitted", "evicted", "filled", "abandoned", "staged"):
                c["cache_" + k] = d[k]
        return c

    def run_epoch(self, epoch: int) -> Dict[str, Any]:
        sleep = self.args.step_sleep_ms / 1e3
        impact = self.policy is not None
        if impact:
            self.loader.set_epoch(epoch)
        before = self._counters()
        waits, delivered, compute = [], 0, 0.0
        cpu0 = cpu_seconds()
        start = time.perf_counter()
        it = iter(self.loader)
        while True:
            t = time.perf_counter()
            try:
                (x, y), idx = next(it)
            except StopIteration:
                break
            t1 = time.perf_counter()
            waits.append(t1 - t)
            w = self.loader.sampler.weights(idx) if impact else None
            losses = train_step(self.model, self.opt, x, y, w)
            if impact:
                self.loader.update(idx, losses)
            time.sleep(sleep)
            compute += time.perf_counter() - t1
            delivered += len(idx)
        seconds = time.perf_counter() - start
        cpu1 = cpu_seconds()  # non-persistent workers have exited and been reaped
        after = self._counters()
        rec = {k: after[k] - before[k] for k in after}
        rec.update(epoch=epoch, seconds=seconds, delivered=delivered,
                   trained_fraction=delivered / len(self.source), data_wait_s=sum(waits),
                   compute_s=compute, batches=len(waits), main_cpu_s=cpu1[0] - cpu0[0],
                   worker_cpu_s=cpu1[1] - cpu0[1])
        if impact:
            rec["loader_data_wait_share"] = self.loader.stats()["data_wait_share"]
            rec["lookahead_batches"] = self.pipeline.prefetcher.lookahead()
        self.epochs.append(rec)
        return rec

    def accuracy(self, test) -> float:
        x, y = test
        with torch.no_grad():
            return float((self.model(x).argmax(1) == y).float().mean())

    def close(self) -> None:
        if self.policy is not None:
            self.dataset.close()
        self.lmdb.close()


# ---------------------------------------------------------------- figures
def bound_seconds(rec: Dict[str, Any], n: int, args, record: float, x_compute: float,
                  package: int, throttled: bool) -> Dict[str, float]:
    """DESIGN.md's physical limit for one epoch from its measured h, f and run length."""
    f = rec["trained_fraction"]
    planned = rec.get("planned", 0)
    h = (rec.get("hits", 0) + rec.get("substitutions", 0)) / planned if planned else 0.0
    read = (rec["main_bytes"] + rec["worker_bytes"]) / record
    runs = rec["main_runs"] + rec["worker_runs"]
    k_eff = min(float(package), max(1.0, read / runs)) if runs else 1.0
    compute = f * n / x_compute
    if throttled:
        bandwidth = f * n * (1 - h) * record / (args.bandwidth_mb_s * 1e6)
        latency = f * n * (1 - h) * (args.latency_ms / 1e3) / (args.inflight * k_eff)
        # What the storage needs for the requests this loader really issued, at full
        # queue depth: how well the I/O engine used the storage, apart from strategy.
        issued = max(runs * (args.latency_ms / 1e3) / args.inflight,
                     read * record / (args.bandwidth_mb_s * 1e6))
    else:
        bandwidth = latency = issued = 0.0
    return {"h": h, "f": f, "k_eff": k_eff, "compute": compute, "bandwidth": bandwidth,
            "latency": latency, "bound": max(compute, bandwidth, latency),
            "issued_io": issued}


def summarize(run: Run, args, record: float, x_compute: float, package: int,
              throttled: bool, test) -> Dict[str, Any]:
    n = args.samples
    measured = run.epochs[args.warmup:]
    times = [r["seconds"] for r in measured]
    bounds = [bound_seconds(r, n, args, record, x_compute, package, throttled)
              for r in measured]
    tot = {k: sum(r.get(k, 0) for r in measured) for k in measured[0]
           if isinstance(measured[0][k], (int, float))}
    planned = tot.get("planned", 0)
    e = len(measured)
    return {
        "loader": run.name, "policy": run.policy, "cache_policy": run.cache_policy,
        "warmup_epochs": args.warmup_epochs if run.policy == "impact" else None,
        "epoch_seconds": [r["seconds"] for r in run.epochs],
        "trained_fraction": [r["trained_fraction"] for r in run.epochs],
        "median_epoch_s": statistics.median(times),
        "samples_per_s": statistics.median(r["delivered"] / r["seconds"] for r in measured),
        "hit_ratio": tot.get("hits", 0) / planned if planned else 0.0,
        "substitution_ratio": tot.get("substitutions", 0) / planned if planned else 0.0,
        "requests_main_per_epoch": tot["main_runs"] / e,
        "requests_workers_per_epoch": tot["worker_runs"] / e,
        "mb_main_per_epoch": tot["main_bytes"] / e / 1e6,
        "mb_workers_per_epoch": tot["worker_bytes"] / e / 1e6,
        "throttle_requests_main_per_epoch": tot.get("throttle_requests", 0) / e,
        "prefetcher_calls_per_epoch": tot.get("storage_requests", 0) / e,
        "prefetcher_mb_per_epoch": tot.get("storage_bytes", 0) / e / 1e6,
        "waited_batches_per_epoch": tot.get("waited_batches", 0) / e,
        "cache_per_epoch": {k[6:]: tot[k] / e for k in tot if k.startswith("cache_")},
        "lookahead_batches": [r.get("lookahead_batches") for r in measured],
        "data_wait_share": tot["data_wait_s"] / tot["seconds"],
        "main_cpu_share": tot["main_cpu_s"] / tot["seconds"],
        "worker_cpu_share": tot["worker_cpu_s"] / tot["seconds"],
        "annotate_s_per_epoch": (tot.get("annotate_s", 0) - tot.get("prefetch_wait_s", 0)) / e,
        "prefetch_wait_s_per_epoch": tot.get("prefetch_wait_s", 0) / e,
        "bound_s": statistics.median(b["bound"] for b in bounds),
        "bound_terms": bounds,
        "ratio_to_bound": statistics.median(t / b["bound"] for t, b in zip(times, bounds)),
        "test_accuracy": run.accuracy(test),
        "epochs": run.epochs,
    }


def run_scenario(args, path: str, record: float, test, x_compute: float, *,
                 throttled: bool, cache_fraction: float) -> List[Dict[str, Any]]:
    from impact_loader.cache.config import DEFAULT_PACKAGE_SIZE

    cache_bytes = int(cache_fraction * args.samples * record)
    runs = [Run(name, args, path, cache_bytes, throttled) for name in args.loaders]
    try:
        for epoch in range(args.epochs):  # one epoch of each loader in turn
            for run in runs:
                rec = run.run_epoch(epoch)
                tag = "warm-up" if epoch < args.warmup else "measured"
                print(f"  {run.name:14s} epoch {epoch} ({tag}): {rec['seconds']:7.2f} s, "
                      f"f={rec['trained_fraction']:.2f}, "
                      f"wait {rec['data_wait_s'] / rec['seconds']:.0%}", flush=True)
        return [summarize(run, args, record, x_compute, DEFAULT_PACKAGE_SIZE, throttled,
                          test) for run in runs]
    finally:
        for run in runs:
            run.close()


def add_ratios(results: List[Dict[str, Any]]) -> None:
    base = next((r for r in results if r["loader"] == "plain"), None)
    for r in results:
        r["speedup_vs_plain"] = (base["median_epoch_s"] / r["median_epoch_s"]
                                 if base else math.nan)
        r["throughput_vs_plain"] = (r["samples_per_s"] / base["samples_per_s"]
                                    if base else math.nan)


def print_table(title: str, results: List[Dict[str, Any]]) -> None:
    cols = [("loader", "{:14s}", "loader"), ("epoch s", "{:8.2f}", "median_epoch_s"),
            ("samp/s", "{:7.0f}", "samples_per_s"), ("speedup", "{:7.2f}x", "speedup_vs_plain"),
            ("hit%", "{:5.1f}", "hit_ratio"), ("sub%", "{:5.1f}", "substitution_ratio"),
            ("req main", "{:8.0f}", "requests_main_per_epoch"),
            ("req wkr", "{:8.0f}", "requests_workers_per_epoch"),
            ("MB main", "{:7.1f}", "mb_main_per_epoch"),
            ("MB wkr", "{:7.1f}", "mb_workers_per_epoch"),
            ("wait%", "{:5.1f}", "data_wait_share"),
            ("bound s", "{:7.2f}", "bound_s"), ("T/bound", "{:7.2f}", "ratio_to_bound"),
            ("acc%", "{:5.1f}", "test_accuracy")]
    pct = {"hit_ratio", "substitution_ratio", "data_wait_share", "test_accuracy"}
    print(f"\n{title}")
    print(" | ".join(f"{h:>{len(fmt.format(0) if k != 'loader' else fmt.format(''))}s}"
                     for h, fmt, k in cols))
    for r in results:
        cells = []
        for _, fmt, k in cols:
            v = r[k]
            text = fmt.format(v * 100 if k in pct else v)
            cells.append(text if v == v else f"{'n/a':>{len(text)}s}")  # NaN: no baseline
        print(" | ".join(cells))
    print("per-epoch seconds / trained fraction (epochs before --warmup not measured):")
    for r in results:
        es = " ".join(f"{t:6.2f}" for t in r["epoch_seconds"])
        fs = " ".join(f"{f:4.2f}" for f in r["trained_fraction"])
        print(f"  {r['loader']:14s} s: {es}   f: {fs}")
    print("bound terms of the median measured epoch (compute | bandwidth | latency; h, f, "
          "k_eff) | storage time of the requests actually issued, at full queue depth:")
    for r in results:
        b = sorted(r["bound_terms"], key=lambda t: t["bound"])[len(r["bound_terms"]) // 2]
        print(f"  {r['loader']:14s} {b['compute']:6.2f} | {b['bandwidth']:6.2f} | "
              f"{b['latency']:6.2f} s; h={b['h']:.3f} f={b['f']:.2f} k_eff={b['k_eff']:.1f}"
              f" | {b['issued_io']:6.2f} s")
    print("CPU per second of wall time (cores busy): main process (all threads) | workers:")
    for r in results:
        print(f"  {r['loader']:14s} {r['main_cpu_share']:5.2f} | {r['worker_cpu_share']:5.2f}")
    inst = [r for r in results if r["policy"] is not None]
    if inst:
        print("main-process time per epoch in the sampler's annotator (excl. prefetch wait)"
              " | waiting for prefetch | prefetcher calls | batches that waited:")
        for r in inst:
            print(f"  {r['loader']:14s} {r['annotate_s_per_epoch']:6.2f} s | "
                  f"{r['prefetch_wait_s_per_epoch']:6.2f} s | "
                  f"{r['prefetcher_calls_per_epoch']:6.0f} | "
                  f"{r['waited_batches_per_epoch']:5.0f}")
        print("cache directory per measured epoch (admitted, evicted, filled, abandoned, "
              "staged) | prefetch lookahead (batches) at each measured epoch's end:")
        for r in inst:
            c = r["cache_per_epoch"]
            print(f"  {r['loader']:14s} " + " ".join(
                f"{k}={c.get(k, 0):.0f}" for k in ("admitted", "evicted", "filled",
                                                   "abandoned", "staged"))
                  + f" | {r['lookahead_batches']}")


def _is_default(row: Dict[str, Any]) -> bool:
    """Whether the impact row ran with the library's default sampler options."""
    return row.get("warmup_epochs") is None


def print_targets(results: List[Dict[str, Any]]) -> Dict[str, Any]:
    by = {r["loader"]: r for r in results}
    out: Dict[str, Any] = {}
    d = by.get("impact")
    if d is None:
        return out
    if "plain" in by:
        out["impact_vs_plain"] = by["plain"]["median_epoch_s"] / d["median_epoch_s"]
    if "uniform-minio" in by:
        out["impact_vs_uniform_minio"] = (by["uniform-minio"]["median_epoch_s"]
                                          / d["median_epoch_s"])
    out["impact_ratio_to_bound"] = d["ratio_to_bound"]
    uni = [by[k]["test_accuracy"] for k in ("uniform-minio", "uniform-lru") if k in by]
    if uni:
        out["impact_accuracy_minus_uniform_points"] = 100 * (d["test_accuracy"] - max(uni))
    label = "default" if _is_default(d) else "NON-default sampler options"
    print(f"\ntargets (impact-loader, {label}):")
    checks = [("impact_vs_plain", ">= 5x faster than plain DataLoader", lambda v: v >= 5),
              ("impact_vs_uniform_minio", ">= 2x faster than uniform+MinIO", lambda v: v >= 2),
              ("impact_ratio_to_bound", "within 1.25x of the physical bound",
               lambda v: v <= 1.25),
              ("impact_accuracy_minus_uniform_points",
               "accuracy within 1 point of uniform", lambda v: v >= -1)]
    for key, text, ok in checks:
        if key in out:
            print(f"  {text:40s} {out[key]:7.2f}  {'met' if ok(out[key]) else 'NOT met'}")
    return out


def _library_version() -> str:
    """Where impact_loader was imported from, and its git commit when available."""
    import subprocess

    where = os.path.dirname(os.path.abspath(il.__file__))
    try:
        commit = subprocess.run(["git", "-C", where, "describe", "--always", "--dirty"],
                                capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        commit = ""
    return f"{il.__version__} from {where}" + (f" (git {commit})" if commit else "")


def main(argv: Optional[List[str]] = None) -> Dict[str, Any]:
    """Run the benchmark; returns every figure (also written with ``--json``)."""
    args = parse_args(argv)
    torch.set_num_threads(1)  # 2 workers + the loop share the cores; keep compute steady
    load_before = os.getloadavg()
    # -- setup
    path, record, test = prepare_data(args)
    x_compute = measure_compute(args)
    print(f"data: {path} ({args.samples} records of {record:.0f} bytes); compute "
          f"{x_compute:.0f} samples/s; load average {load_before[0]:.2f} "
          f"on {os.cpu_count()} cores", flush=True)
    report: Dict[str, Any] = {
        "args": {k: v for k, v in vars(args).items()}, "record_bytes": record,
        "compute_samples_per_s": x_compute, "torch": torch.__version__,
        "cpu_count": os.cpu_count(), "python": sys.version.split()[0],
        "impact_loader": _library_version()}
    print(f"impact_loader {report['impact_loader']}", flush=True)
    print(f"reference scenario: {args.latency_ms} ms, {args.bandwidth_mb_s} MB/s, "
          f"{args.inflight} in flight; cache {args.cache_fraction:.0%} of the data",
          flush=True)
    ref = run_scenario(args, path, record, test, x_compute, throttled=True,
                       cache_fraction=args.cache_fraction)
    add_ratios(ref)
    report["reference"] = ref
    if args.easy:
        print("easy scenario: warm local LMDB, no throttle, cache holds everything",
              flush=True)
        warm = il.LMDBSource(path)
        for a in range(0, args.samples, 4096):  # page cache warm
            warm.read_many(range(a, min(a + 4096, args.samples)))
        warm.close()
        easy = run_scenario(args, path, record, test, x_compute, throttled=False,
                            cache_fraction=1.05)
        add_ratios(easy)
        report["easy"] = easy
    load_after = os.getloadavg()
    report["load_average"] = {"before": load_before, "after": load_after}
    print_table(f"REFERENCE (I/O-bound): N={args.samples}, {record:.0f} B/record, "
                f"batch {args.batch_size}, {args.workers} workers, median of epochs "
                f"{args.warmup}-{args.epochs - 1}; req/MB per epoch", ref)
    report["targets"] = print_targets(ref)
    if args.easy:
        print_table("EASY (not I/O-bound): warm local LMDB, no throttle, cache 105%", easy)
        for r in easy:
            print(f"  throughput {r['loader']}/plain: {r['throughput_vs_plain']:.2f}")
    print(f"\nload average before {load_before[0]:.2f}, after {load_after[0]:.2f} "
          f"({os.cpu_count()} cores)")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(report, fh, indent=1, default=float)
    return report


if __name__ == "__main__":
    main()
