"""Where the training loop's thread spends each batch, loader by loader.

The reference benchmark reports data-wait and the ratio to the physical bound per
epoch. This tool splits one training-loop iteration of the built-in task into its
parts, per batch, side by side for the chosen loaders:

- ``wait``: inside ``next(loader)`` (mean, median and 90th percentile), and the CPU the
  training thread spent there;
- ``in pipe``: the share of ``next()`` calls at which the worker's batch had already
  arrived in the DataLoader's result pipe (data ready, so the wait is the training
  process's own receive work and its wait for the GIL, not storage);
- ``weights`` / ``model`` / ``update``: ``sampler.weights``, the MLP's forward and
  backward pass, ``sampler.update``; ``sleep``: the accelerator stand-in;
- ``hook``: the cache pipeline's sampler hook (part of ``wait``);
- ``first4``: the waits of the epoch's first four batches, spread over all its batches
  (the part of ``wait`` that the epoch's start costs: a new plan, its first reads).

Same scenario as ``benchmarks/reference.py`` (built-in synthetic LMDB data, emulated
NFS, cache 20% of the bytes, batch 128, 2 fork workers, 10 ms per step). Epochs 0-1
are the full-data warm-up of the importance policy; the report starts at ``--skip``.

    python benchmarks/loop_profile.py --latency-ms 1 --loaders plain,minio,impact
"""

from __future__ import annotations

import argparse
import statistics
import time
from typing import Any, Dict, List

import numpy as np
import torch

from impact_loader.bench.run import LoaderRun
from impact_loader.bench.runner import _mean_record, prepare_builtin
from impact_loader.bench.scenario import Scenario, Storage
from impact_loader.bench.task import ModelTask, to_xy
from impact_loader.detect import open_source

PARTS = ("weights", "model", "sleep", "update")


def _in_pipe(run: LoaderRun, it: Any) -> Any:
    """Whether the worker's next batch already waits in the result pipe (None: no
    workers). ``it`` is the DataLoader's own iterator, or ImpactLoader's generator
    around its persistent one."""
    inner = it if hasattr(it, "_data_queue") else getattr(run.loader, "_iterator", None)
    queue = getattr(inner, "_data_queue", None)
    reader = getattr(queue, "_reader", None)
    return None if reader is None else reader.poll(0)


def profile_epoch(run: LoaderRun, epoch: int) -> Dict[str, Any]:
    """Train one epoch through ``run`` and time each part of every iteration."""
    task, policy = run.task, run.spec.policy
    sleep, task.sleep = task.sleep, 0.0  # timed apart from the model below
    hook0 = run.loader.stats().get("hook_s", 0.0) if policy else 0.0
    if policy:
        run.loader.set_epoch(epoch)
    waits: List[float] = []
    cpus: List[float] = []
    ready: List[bool] = []
    parts = dict.fromkeys(PARTS, 0.0)
    start = time.perf_counter()
    try:
        it = iter(run.loader)
        while True:
            in_pipe = _in_pipe(run, it)
            t0, c0 = time.perf_counter(), time.thread_time()
            try:
                batch, idx = next(it)
            except StopIteration:
                break
            t1 = time.perf_counter()
            waits.append(t1 - t0)
            cpus.append(time.thread_time() - c0)
            if in_pipe is not None:
                ready.append(in_pipe)
            # as LoaderRun.run_epoch: only a learning policy weighs the losses
            w = run.loader.sampler.weights(idx) if run.spec.learns else None
            t2 = time.perf_counter()
            losses = task.step(batch, w, epoch, idx)
            t3 = time.perf_counter()
            time.sleep(sleep)
            t4 = time.perf_counter()
            if policy:
                run.update(idx, losses)
            t5 = time.perf_counter()
            for k, a, b in zip(PARTS, (t1, t2, t3, t4), (t2, t3, t4, t5)):
                parts[k] += b - a
    finally:
        task.sleep = sleep
    n = len(waits)
    hook = (run.loader.stats().get("hook_s", 0.0) - hook0) if policy else 0.0
    ms = 1e3 / max(n, 1)
    return {"epoch": epoch, "seconds": time.perf_counter() - start, "batches": n,
            "wait_ms": ms * sum(waits), "wait_p50_ms": 1e3 * statistics.median(waits),
            "wait_p90_ms": 1e3 * float(np.percentile(waits, 90)),
            "first4_ms": ms * sum(waits[:4]),
            "next_cpu_ms": ms * sum(cpus), "in_pipe": (sum(ready) / len(ready)
                                                       if ready else float("nan")),
            "hook_ms": ms * hook, **{f"{k}_ms": ms * v for k, v in parts.items()}}


def main(argv: Any = None) -> Dict[str, Dict[str, float]]:
    """Run the loaders, print the table; returns its rows (loader -> column -> median)."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 epilog="Figures are per batch, in milliseconds; "
                                        "the median over the reported epochs.")
    ap.add_argument("--latency-ms", type=float, default=1.0, metavar="MS",
                    help="emulated NFS latency per request (default 1)")
    ap.add_argument("--samples", type=int, default=20000, metavar="N",
                    help="records of the built-in dataset (default 20000)")
    ap.add_argument("--loaders", default="plain,minio,impact", metavar="LIST",
                    help="comma-separated loaders (names as in impact-bench; "
                         "default plain,minio,impact)")
    ap.add_argument("--epochs", type=int, default=5, metavar="N",
                    help="epochs per loader (default 5)")
    ap.add_argument("--skip", type=int, default=2, metavar="N",
                    help="first epochs left out of the report (default 2)")
    ap.add_argument("--data-dir", metavar="DIR",
                    help="where the built-in dataset is written once (default: as "
                         "impact-bench)")
    args = ap.parse_args(argv)
    if args.epochs <= args.skip:
        ap.error(f"--epochs {args.epochs} must exceed --skip {args.skip}")
    torch.set_num_threads(1)
    loaders = tuple(x.strip() for x in args.loaders.split(",") if x.strip())
    scenario = Scenario(loaders=loaders, samples=args.samples, data_dir=args.data_dir,
                        storage=Storage.named("nfs", latency_ms=args.latency_ms))
    path = prepare_builtin(scenario, progress=False)
    n, record = _mean_record(path)  # as impact-bench sizes the cache
    cache_bytes = int(scenario.cache_fractions[0] * n * record)
    cols = ("seconds", "wait_ms", "wait_p50_ms", "wait_p90_ms", "first4_ms",
            "next_cpu_ms", "in_pipe",
            "hook_ms", "weights_ms", "model_ms", "sleep_ms", "update_ms")
    print(f"{args.samples} records, NFS at {args.latency_ms:g} ms; per batch (ms), median "
          f"of epochs {args.skip}-{args.epochs - 1}")
    print("loader         " + " ".join(f"{c.replace('_ms', ''):>9s}" for c in cols))
    table: Dict[str, Dict[str, float]] = {}
    for name in loaders:
        run = LoaderRun(name, scenario, lambda: open_source(path), cache_bytes,
                        ModelTask(seed=scenario.seed, compute_ms=scenario.compute_ms), to_xy)
        try:
            rows = [profile_epoch(run, e) for e in range(args.epochs)][args.skip:]
        finally:
            run.close()
        table[name] = {c: statistics.median(r[c] for r in rows) for c in cols}
        print(f"{name:14s} " + " ".join(f"{table[name][c]:9.2f}" for c in cols))
    return table


if __name__ == "__main__":
    main()
