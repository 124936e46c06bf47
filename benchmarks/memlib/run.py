"""One measured run: setup, the run itself in a fresh interpreter, step-by-step close."""

from __future__ import annotations

import gc
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
import tracemalloc
from typing import Any, List

import numpy as np

import impact_loader as il
from impact_loader.bench.task import StandInTask, to_xy
from impact_loader.sampling.trim import release_free_heap
from impact_loader.synthetic import synthetic_samples

from .heap import structure_costs, tracemalloc_top
from .malloc import malloc_arenas
from .procfs import (alive, memfd_fds, proc_memory, reset_peak, shm_entries, shm_held,
                     split_shm, wait_until)

__all__ = ["prepare_data", "build", "worker_pids", "measure", "close_step_by_step",
           "run_measure", "child_command", "ENTRY"]

#: The script child runs execute (``--measure``, ``--child``).
ENTRY = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                     "memory.py")


def prepare_data(args, n: int) -> tuple:
    """Write (or reuse) an LMDB of ``n`` records; return its path and the mean record
    size in bytes."""
    os.makedirs(args.data_dir, exist_ok=True)
    path = os.path.join(args.data_dir, f"memory-n{n}-r{args.record_bytes}.lmdb")
    src = None
    if os.path.exists(path):
        try:
            src = il.LMDBSource(path)
            if len(src) != n:
                src.close()
                src = None
        except il.ImpactLoaderError:
            src = None
    if src is None:
        print(f"writing {n} records to {path} ...", flush=True)
        src = il.write_lmdb(path, synthetic_samples(n,
                                                    record_bytes=args.record_bytes),
                            overwrite=True)
    probe = np.unique(np.linspace(0, n - 1, 64).astype(np.int64))
    record = float(np.mean([len(r) for r in src.read_many(probe)]))
    src.close()
    return path, record


def build(args, path: str, cache_bytes: int, **loader_kwargs: Any):
    """The dataset and loader under test (persistent workers)."""
    dataset = il.ImpactDataset(il.LMDBSource(path), transform=to_xy,
                               cache_bytes=cache_bytes, cache_policy=args.cache_policy)
    kwargs = dict(num_workers=args.workers, persistent_workers=args.workers > 0)
    if args.workers and args.start_method:
        kwargs["multiprocessing_context"] = args.start_method
    kwargs.update(loader_kwargs)
    loader = il.ImpactLoader(dataset, args.batch_size, policy=args.policy, seed=0, **kwargs)
    return dataset, loader


def worker_pids(loader) -> List[int]:
    """Pids of the persistent workers of ``loader`` (empty without workers)."""
    it = getattr(loader, "_iterator", None)
    return [w.pid for w in getattr(it, "_workers", ())]


def measure(args) -> dict:
    """One measured run in this (fresh) process: build, train, snapshot, close.

    Runs in its own process (see :func:`run_measure`) so the baseline is a clean
    interpreter with the imports done, and so other runs leave nothing behind in it.
    """
    path, n = args.data, args.samples
    cache_bytes = int(args.cache_fraction * n * args.record)
    task = StandInTask(n, seed=0, compute_ms=0.0)  # setup: the job's own O(N) array
    shm0, fds0, threads0 = shm_entries(), memfd_fds(), threading.active_count()
    gc.collect()
    reset_peak()
    before = proc_memory(source_dir=path)
    if args.tracemalloc:
        tracemalloc.start()
        trace0 = tracemalloc.take_snapshot()
    held = dict(zip(("dataset", "loader"), build(args, path, cache_bytes)))
    held["shm"] = set()  # /dev/shm names our processes mapped or held open
    dataset, loader = held["dataset"], held["loader"]
    config = dataset.directory.config if dataset.directory is not None else None
    out = {"samples": n, "cache_bytes": cache_bytes, "record_bytes": args.record,
           "staging_bytes": config.staging_bytes if config else 0,
           "budget_bytes": config.region_bytes if config else 0,
           "store_slots": dataset.store.max_entries if dataset.store is not None else 0,
           "store_meta_bytes": dataset.store._region.meta_bytes if dataset.store else 0,
           "before": before, "built": proc_memory(source_dir=path), "epochs": []}
    # The cache service (Linux default) holds the directory: its memory counts too.
    service = getattr(dataset, "service", None)
    service_pid = service.process.pid if service is not None else None
    out["service_built"] = proc_memory(service_pid, source_dir=path) if service_pid else None
    pids = []
    if args.gc_freeze:
        gc.freeze()  # before the workers fork (at the first epoch): see --gc-freeze
    for epoch in range(args.epochs):
        loader.set_epoch(epoch)
        start, delivered = time.perf_counter(), 0
        for (x, y), idx in loader:
            loader.update(idx, task.step(None, None, epoch, idx))
            delivered += len(idx)
        del x, y, idx  # the last batch's shared tensors
        pids = worker_pids(loader)
        held["shm"].update(shm_held([os.getpid(), *pids]))
        row = {"epoch": epoch + 1, "seconds": time.perf_counter() - start,
               "samples": delivered, "main": proc_memory(source_dir=path),
               "workers": [proc_memory(pid, source_dir=path) for pid in pids],
               "service": (proc_memory(service_pid, source_dir=path) if service_pid
                           else None),
               "malloc": malloc_arenas()}
        if args.tracemalloc:
            row["traced"], row["traced_peak"] = tracemalloc.get_traced_memory()
            tracemalloc.reset_peak()
        out["epochs"].append(row)
        print(f"  N={n} epoch {epoch + 1}/{args.epochs}: {delivered} samples in "
              f"{row['seconds']:.1f} s, main RSS {row['main']['rss'] / 2**20:.1f} MiB, "
              f"workers RSS {[round(w['rss'] / 2**20, 1) for w in row['workers']]} MiB"
              + (f", service private {row['service']['anon_private'] / 2**20:.1f} MiB"
                 if row["service"] else ""),
              file=sys.stderr, flush=True)
    out["stats"] = {k: v for k, v in loader.stats().items() if isinstance(v, (int, float))}
    out["structures"] = structure_costs({"sampler": loader.sampler, "dataset": dataset})
    if args.tracemalloc:
        snap = tracemalloc.take_snapshot()
        tracemalloc.stop()
        out["tracemalloc"] = tracemalloc_top(trace0, snap, n)
    del dataset, loader  # from here on only ``held`` owns them
    # Diagnostic: how much of the heap growth is free memory malloc kept (fragmentation,
    # per-thread arenas) rather than live objects.
    out["trimmed"] = proc_memory(source_dir=path) if release_free_heap() else None
    out["cleanup"] = close_step_by_step(held, [os.getpid(), *pids], shm0, fds0, threads0)
    return out


def close_step_by_step(held: dict, pids: List[int], shm0, fds0, threads0) -> List[dict]:
    """Drop the loader, close the dataset, drop it; what is left after each step.

    ``held`` must own the only references to ``"loader"`` and ``"dataset"``; ``pids``
    are this process and its workers. A new ``/dev/shm`` name counts as ours if one of
    ``pids`` mapped or held it (``held["shm"]``, updated here) or it names one of them
    (torch's ``torch_<pid>_...``); other new names are other processes' on this machine.
    """
    steps = []
    workers = pids[1:]

    def look(name: str) -> None:
        held["shm"].update(shm_held(pids))
        fds = memfd_fds()
        ours, others = split_shm(set(shm_entries()) - set(shm0), held["shm"], pids)
        steps.append({"step": name, "memfd_fds": len(fds) - len(fds0),
                      "memfd_names": fds, "workers_alive": sum(map(alive, workers)),
                      "new_shm": ours, "other_new_shm": len(others),
                      "extra_threads": threading.active_count() - threads0})

    look("loader alive")
    del held["loader"]
    gc.collect()
    wait_until(lambda: not any(map(alive, workers)), 10.0)
    look("del loader; gc.collect()")
    held["dataset"].close()
    gc.collect()
    look("dataset.close()")
    del held["dataset"]
    gc.collect()
    look("del dataset; gc.collect()")
    return steps


def run_measure(args, n: int, path: str, record: float) -> dict:
    """:func:`measure` for ``n`` samples in a fresh interpreter; its report."""
    fd, out = tempfile.mkstemp(suffix=".json", prefix="impact-memory-")
    os.close(fd)
    try:
        cmd = child_command(args, "--measure", path, n, record) + ["--epochs", str(args.epochs),
                                                                   "--out", out]
        cmd += [flag for flag, on in (("--tracemalloc", args.tracemalloc),
                                      ("--gc-freeze", args.gc_freeze)) if on]
        env = None
        if args.malloc_arena_max:  # glibc reads it at start-up: only a fresh process
            env = dict(os.environ, MALLOC_ARENA_MAX=str(args.malloc_arena_max))
        subprocess.run(cmd, check=True, env=env)
        with open(out) as f:
            return json.load(f)
    finally:
        os.unlink(out)


def child_command(args, mode: str, path: str, n: int, record: float) -> List[str]:
    """Command line of a child run of this script (``--measure`` or ``--child``)."""
    cmd = [sys.executable, ENTRY, mode, "--data", path,
           "--samples", str(n), "--workers", str(args.workers), "--batch-size",
           str(args.batch_size), "--cache-fraction", str(args.cache_fraction),
           "--record", str(record), "--policy", args.policy, "--cache-policy",
           args.cache_policy]
    if args.start_method:
        cmd += ["--start-method", args.start_method]
    return cmd
