"""Memory targets of issue 5: main-process bytes per sample, flat workers, no leftovers.

Targets (issue 5, "Targets", memory bullet):

1. main-process RSS grows by at most 100 bytes per dataset sample beyond the cache
   budget (``cache_bytes + staging_bytes``, the shared data region);
2. DataLoader worker RSS stays flat over the epochs (no copy-on-read growth from Python
   lists of N objects);
3. no shared-memory segment outlives the loader.

Setup (not measured): synthetic LMDBs of small records (~590 bytes, so per-sample
overheads dominate) are written once under ``--data-dir`` and reused. Each measured run
is a fresh interpreter (imports and the stand-in task's per-sample difficulties made
before the baseline): build ``ImpactDataset`` + ``ImpactLoader`` (persistent workers),
train ``--epochs`` epochs reporting a stand-in per-sample loss with ``loader.update``,
snapshot ``/proc`` before building, after building and after each epoch, then close
everything step by step, listing ``/dev/shm`` and the memfd descriptors after each step.
Two runs, N = ``--samples`` and N/8: the difference of their growth divided by the
difference of N is the cost of one more sample, free of fixed costs (threads, torch
machinery, imports) that a single run would spread over N. Finally a child process
holding a loader with workers is SIGKILLed and its leftovers are looked for.

Main-process figures come per kind of mapping (``/proc/self/smaps``): ``memfd`` (the
shared cache and counter regions: cache bytes, bounded by the budget), ``source`` (the
LMDB file, memory-mapped by the prefetch threads: reclaimable page cache of the data
file, not memory the library allocates), ``shm`` (torch's shared batch tensors) and the
rest, ``metadata``: the heap and anonymous memory the library allocates. Worker figures
separate RSS without shared mappings from copy-on-write (inherited anonymous pages that
turned private, which leaves RSS unchanged).

    python benchmarks/memory.py                   # default run (200,000 records, 10 epochs)
    python benchmarks/memory.py --quick           # smoke run on small data
    python benchmarks/memory.py --tracemalloc     # plus the Python heap by allocation site
    python benchmarks/memory.py --gc-freeze       # gc.freeze() before the workers fork
"""

from __future__ import annotations

import argparse
import gc
import inspect
import json
import os
import re
import select
import signal
import subprocess
import sys
import tempfile
import threading
import time
import tracemalloc
from typing import Any, Dict, List, Optional

import numpy as np
import torch

import impact_loader as il
from impact_loader.bench.task import StandInTask, to_xy
from impact_loader.synthetic import synthetic_samples

TARGET_BYTES_PER_SAMPLE = 100
#: Worker growth (private bytes) from the end of epoch 1 to the last epoch that still
#: counts as flat: a Python list of N objects costs at least its 8-byte pointer per
#: sample once copied, so copy-on-read growth shows well above this.
FLAT_BYTES_PER_SAMPLE = 4
FLAT_FLOOR_BYTES = 2 << 20  # allocator noise a short run cannot tell from growth
DEFAULT_POLICY = inspect.signature(il.ImpactLoader.__init__).parameters["policy"].default
DEFAULT_CACHE_POLICY = inspect.signature(
    il.ImpactDataset.__init__).parameters["cache_policy"].default
_MAP_HEADER = re.compile(r"^[0-9a-f]+-[0-9a-f]+ ")


# ---------------------------------------------------------------- /proc readers
def _kb_fields(lines) -> Dict[str, int]:
    out = {}
    for line in lines:
        parts = line.split()
        if len(parts) >= 3 and parts[-1] == "kB":
            out[parts[0].rstrip(":")] = int(parts[1]) * 1024
    return out


def proc_memory(pid: Any = "self", source_dir: Optional[str] = None) -> Dict[str, int]:
    """Bytes of one process: RSS, PSS, USS, status split, RSS and private bytes per kind.

    Kinds of mapping: ``memfd`` (impact-loader's shared regions), ``source`` (files
    under ``source_dir``), ``shm`` (``/dev/shm`` files: torch's shared batch tensors,
    semaphores), ``anon`` (heap, stacks, anonymous maps), ``file`` (everything else).
    ``<kind>_private`` counts pages mapped by this process only: for ``anon`` these
    are the pages a forked worker copied (or allocated itself), while an inherited page
    still shared with the parent is not private.
    """
    with open(f"/proc/{pid}/status") as f:
        status = _kb_fields(f)
    with open(f"/proc/{pid}/smaps_rollup") as f:
        roll = _kb_fields(f)
    kinds = ("memfd", "source", "shm", "anon", "file")
    rss, private = dict.fromkeys(kinds, 0), dict.fromkeys(kinds, 0)
    kind = "anon"
    src = os.path.realpath(source_dir) if source_dir else None
    with open(f"/proc/{pid}/smaps") as f:
        for line in f:
            if _MAP_HEADER.match(line):
                parts = line.split(None, 5)
                path = parts[5].strip() if len(parts) > 5 else ""
                if path.startswith("/memfd:impact-loader"):
                    kind = "memfd"
                elif src and path.startswith(src):
                    kind = "source"
                elif path.startswith("/dev/shm"):
                    kind = "shm"
                elif not path or path.startswith("["):
                    kind = "anon"
                else:
                    kind = "file"
            elif line.startswith("Rss:"):
                rss[kind] += int(line.split()[1]) * 1024
            elif line.startswith(("Private_Clean:", "Private_Dirty:")):
                private[kind] += int(line.split()[1]) * 1024
    return {"rss": status["VmRSS"], "hwm": status["VmHWM"], "rss_anon": status["RssAnon"],
            "rss_file": status["RssFile"], "rss_shmem": status["RssShmem"],
            "pss": roll["Pss"], "uss": roll["Private_Clean"] + roll["Private_Dirty"],
            **{f"{k}_rss": v for k, v in rss.items()},
            **{f"{k}_private": v for k, v in private.items()}}


def shm_held(pids: List[int]) -> List[str]:
    """``/dev/shm`` names that ``pids`` map or hold open (what could be theirs)."""
    names = set()
    for pid in pids:
        try:
            with open(f"/proc/{pid}/maps") as f:
                for line in f:
                    at = line.find("/dev/shm/")
                    if at >= 0:
                        names.add(line[at + 9:].split()[0])
            for fd in os.listdir(f"/proc/{pid}/fd"):
                try:
                    target = os.readlink(f"/proc/{pid}/fd/{fd}")
                except OSError:
                    continue
                if target.startswith("/dev/shm/"):
                    names.add(target[9:].split()[0])
        except OSError:
            continue  # the process is gone
    return sorted(names)


def malloc_trim() -> bool:
    """Give free heap memory back to the OS (glibc ``malloc_trim(0)``); False if absent."""
    try:
        import ctypes

        return bool(ctypes.CDLL("libc.so.6").malloc_trim(0)) or True
    except (OSError, AttributeError):
        return False


def memfd_fds(pid: Any = "self") -> List[str]:
    """The memfd descriptors ``pid`` holds, as ``"<name> <size in bytes>"``."""
    out = []
    base = f"/proc/{pid}/fd"
    for fd in os.listdir(base):
        try:
            target = os.readlink(os.path.join(base, fd))
            if target.startswith("/memfd:"):
                size = os.stat(os.path.join(base, fd)).st_size
                out.append(f"{target.split()[0][7:]} {size}")
        except OSError:
            continue  # closed meanwhile (the listdir descriptor itself)
    return sorted(out)


def shm_entries() -> List[str]:
    """Names in ``/dev/shm`` (POSIX shared memory, semaphores, torch tensors)."""
    try:
        return sorted(os.listdir("/dev/shm"))
    except FileNotFoundError:
        return []


def alive(pid: int) -> bool:
    """Whether ``pid`` exists and is not a zombie."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return False


def reset_peak() -> None:
    """Reset VmHWM of this process (Linux >= 4.0), so the peak covers the run only."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        pass


# ---------------------------------------------------------------- setup
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


# ---------------------------------------------------------------- what costs memory
def structure_costs(roots: Dict[str, Any], min_bytes: int = 4096) -> List[dict]:
    """Heap bytes held by the objects reachable from ``roots``, per attribute path.

    Counts numpy arrays once per owning buffer (views of a shared mapping are reported
    as shared, not heap), ``array.array`` buffers, and containers with their elements
    (a list of N objects shows up here). Paths holding less than ``min_bytes`` are
    left out.
    """
    from array import array
    import mmap

    seen, rows = set(), []
    stack = [(name, obj, 0) for name, obj in roots.items()]
    while stack:
        path, obj, depth = stack.pop()
        if obj is None or id(obj) in seen or depth > 8:
            continue
        seen.add(id(obj))
        if isinstance(obj, np.ndarray):
            base = obj
            while isinstance(base.base, np.ndarray):
                base = base.base
            if id(base) != id(obj) and id(base) in seen:
                continue
            seen.add(id(base))
            shared = isinstance(base.base, (mmap.mmap, memoryview)) or (
                base.base is not None and not isinstance(base.base, bytes))
            rows.append({"path": path, "bytes": int(base.nbytes), "shared": bool(shared),
                         "what": f"ndarray {base.dtype}[{base.size}]"})
        elif isinstance(obj, array):
            rows.append({"path": path, "bytes": obj.buffer_info()[1] * obj.itemsize,
                         "shared": False, "what": f"array('{obj.typecode}')[{len(obj)}]"})
        elif isinstance(obj, (list, tuple, set, frozenset, dict)) and not (
                isinstance(obj, tuple) and len(obj) < 64):
            items = list(obj.values()) if isinstance(obj, dict) else list(obj)
            scalars = [x for x in items if isinstance(x, (int, float, str, bytes))]
            size = sys.getsizeof(obj) + sum(sys.getsizeof(x) for x in scalars)
            if isinstance(obj, dict):
                size += sum(sys.getsizeof(k) for k in obj if not isinstance(k, str))
            rows.append({"path": path, "bytes": size, "shared": False,
                         "what": f"{type(obj).__name__}[{len(obj)}]"})
            for k, x in (obj.items() if isinstance(obj, dict) else enumerate(items)):
                if not isinstance(x, (int, float, str, bytes)):
                    stack.append((f"{path}[{k!r}]", x, depth + 1))
        elif isinstance(obj, tuple):
            for k, x in enumerate(obj):
                stack.append((f"{path}[{k}]", x, depth + 1))
        elif hasattr(obj, "__dict__") or hasattr(type(obj), "__slots__"):
            top = type(obj).__module__.split(".")[0]
            if isinstance(obj, (type, threading.Thread, torch.nn.Module)) \
                    or inspect.isroutine(obj) or top not in ("impact_loader", "torch",
                                                              "builtins", "collections"):
                continue
            attrs = dict(getattr(obj, "__dict__", {}))
            for slot in getattr(type(obj), "__slots__", ()):
                if hasattr(obj, slot):
                    attrs[slot] = getattr(obj, slot)
            for k, x in attrs.items():
                stack.append((f"{path}.{k}", x, depth + 1))
    return sorted((r for r in rows if r["bytes"] >= min_bytes), key=lambda r: -r["bytes"])


def tracemalloc_top(before, after, n: int, limit: int = 12) -> List[dict]:
    """The allocation sites that grew most between two tracemalloc snapshots."""
    stats = after.compare_to(before, "lineno")
    out = []
    for s in stats[:limit]:
        frame = s.traceback[0]
        out.append({"site": f"{os.path.relpath(frame.filename)}:{frame.lineno}",
                    "bytes": s.size_diff, "bytes_per_sample": s.size_diff / n,
                    "blocks": s.count_diff})
    return out


# ---------------------------------------------------------------- measurement
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
               "workers": [proc_memory(pid, source_dir=path) for pid in pids]}
        if args.tracemalloc:
            row["traced"], row["traced_peak"] = tracemalloc.get_traced_memory()
            tracemalloc.reset_peak()
        out["epochs"].append(row)
        print(f"  N={n} epoch {epoch + 1}/{args.epochs}: {delivered} samples in "
              f"{row['seconds']:.1f} s, main RSS {row['main']['rss'] / 2**20:.1f} MiB, "
              f"workers RSS {[round(w['rss'] / 2**20, 1) for w in row['workers']]} MiB",
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
    out["trimmed"] = proc_memory(source_dir=path) if malloc_trim() else None
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
    _wait(lambda: not any(map(alive, workers)), 10.0)
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
        subprocess.run(cmd, check=True)
        with open(out) as f:
            return json.load(f)
    finally:
        os.unlink(out)


def child_command(args, mode: str, path: str, n: int, record: float) -> List[str]:
    """Command line of a child run of this script (``--measure`` or ``--child``)."""
    cmd = [sys.executable, os.path.abspath(__file__), mode, "--data", path,
           "--samples", str(n), "--workers", str(args.workers), "--batch-size",
           str(args.batch_size), "--cache-fraction", str(args.cache_fraction),
           "--record", str(record), "--policy", args.policy, "--cache-policy",
           args.cache_policy]
    if args.start_method:
        cmd += ["--start-method", args.start_method]
    return cmd


def split_shm(new: set, held: set, pids: List[int]) -> tuple:
    """``(ours, others)``: new ``/dev/shm`` names ours (held, or named after a pid)."""
    tags = tuple(f"_{pid}_" for pid in pids)
    ours = sorted(x for x in new if x in held or any(t in x for t in tags))
    return ours, sorted(new - set(ours))


def _wait(done, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while not done():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


# ---------------------------------------------------------------- killed process
def kill_child(args, path: str, n: int, record: float) -> dict:
    """Start a child that trains with workers, SIGKILL it, and look for leftovers.

    The child's memfds have no name: the kernel frees them once the child and its
    workers are gone, so the check is that the workers exit, that no ``/dev/shm`` name
    the child or its workers held survives (named semaphores of spawn-started
    workers are unlinked by the child's resource tracker), and that this process
    gained no descriptor or child process.
    """
    import multiprocessing

    shm0, fds0 = shm_entries(), memfd_fds()
    child = subprocess.Popen(child_command(args, "--child", path, n, record),
                             stdout=subprocess.PIPE, text=True)
    out: Dict[str, Any] = {"ok": False}
    info = {"workers": [], "memfd_fds": 0, "shm": []}
    try:
        ready, _, _ = select.select([child.stdout], [], [], 180.0)
        line = child.stdout.readline() if ready else ""
        if line:
            info = json.loads(line)
        else:
            out["error"] = f"child exited or timed out before training (rc={child.poll()})"
        held = set(info["shm"]) | set(shm_held([child.pid, *info["workers"]]))
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait()
        child.stdout.close()
    pids = [child.pid, *info["workers"]]
    out.update(child_pid=child.pid, worker_pids=info["workers"],
               child_memfd_fds=info["memfd_fds"], shm_held_while_running=sorted(held))
    # Workers notice the dead parent within torch's status interval (5 s).
    out["workers_exited"] = _wait(lambda: not any(map(alive, info["workers"])), 30.0)
    _wait(lambda: not split_shm(set(shm_entries()) - set(shm0), held, pids)[0], 10.0)
    out["new_shm"], others = split_shm(set(shm_entries()) - set(shm0), held, pids)
    out["other_new_shm"] = len(others)
    out["parent_memfd_fds"] = len(memfd_fds()) - len(fds0)
    out["parent_children"] = [p.pid for p in multiprocessing.active_children()]
    out["ok"] = bool(line and out["workers_exited"] and not out["new_shm"]
                     and out["parent_memfd_fds"] == 0 and info["memfd_fds"] > 0
                     and not out["parent_children"])
    return out


def child_main(args) -> None:
    """The process that gets killed: a loader with workers, mid-epoch."""
    cache_bytes = int(args.cache_fraction * args.samples * args.record)
    dataset, loader = build(args, args.data, cache_bytes)
    task = StandInTask(args.samples, seed=0, compute_ms=0.0)
    it = iter(loader)
    for _ in range(3):
        (x, y), idx = next(it)
        loader.update(idx, task.step(None, None, 0, idx))
    pids = worker_pids(loader)
    print(json.dumps({"workers": pids, "memfd_fds": len(memfd_fds()),
                      "shm": shm_held([os.getpid(), *pids])}), flush=True)
    time.sleep(600)




# ---------------------------------------------------------------- figures and targets
def growth(run: dict) -> Dict[str, float]:
    """Bytes the run grew by, at the largest epoch-end snapshot, per kind."""
    b, budget = run["before"], run["budget_bytes"]
    mains = [e["main"] for e in run["epochs"]]

    def peak(fn) -> int:
        return max(fn(m) for m in mains)

    def d(m: dict, key: str) -> int:
        return m[key] - b[key]

    g = {"rss": peak(lambda m: d(m, "rss")),
         "beyond_budget": peak(lambda m: d(m, "rss") - budget),
         "beyond_budget_excl_source": peak(lambda m: d(m, "rss") - d(m, "source_rss")
                                           - budget),
         "metadata": peak(lambda m: d(m, "rss") - d(m, "source_rss") - d(m, "memfd_rss")
                          - d(m, "shm_rss")),
         "anon": peak(lambda m: d(m, "rss_anon")),
         "memfd": peak(lambda m: m["memfd_rss"]),
         "source": peak(lambda m: m["source_rss"]),
         "peak": max(m["hwm"] for m in mains) - b["rss"]}
    t = run.get("trimmed") or mains[-1]
    g["metadata_after_trim"] = (d(t, "rss") - d(t, "source_rss") - d(t, "memfd_rss")
                                - d(t, "shm_rss"))
    series: Dict[int, List[dict]] = {}
    for e in run["epochs"]:
        for i, w in enumerate(e["workers"]):
            series.setdefault(i, []).append(w)

    def private(w: dict) -> int:
        return w["rss"] - w["memfd_rss"] - w["source_rss"] - w["shm_rss"]

    def grew(fn) -> int:
        return max((fn(s[-1]) - fn(s[0]) for s in series.values()), default=0)

    g["worker_uss"] = grew(lambda w: w["uss"])
    g["worker_rss"] = grew(lambda w: w["rss"])
    g["worker_anon_private"] = grew(lambda w: w["anon_private"])
    g["worker_rss_excl_shared"] = grew(private)
    # Copy-on-read shows as anonymous pages turning private (RSS unchanged after fork);
    # memory a worker allocates shows in both. USS also counts page-cache pages of the
    # files only this worker maps (its own LMDB mapping), which are not copies.
    g["worker_growth"] = max(g["worker_anon_private"], g["worker_rss_excl_shared"])
    return g


MAIN_KINDS = ("rss", "beyond_budget", "beyond_budget_excl_source", "metadata", "anon",
              "peak", "metadata_after_trim")


def figures(small: dict, large: dict) -> dict:
    """Per-sample figures: at N, and per additional sample between the two runs."""
    n_s, n_l = small["samples"], large["samples"]
    g_s, g_l = growth(small), growth(large)
    out = {"small": g_s, "large": g_l, "per_sample": {}}
    for k in MAIN_KINDS:
        slope = (g_l[k] - g_s[k]) / (n_l - n_s)
        out["per_sample"][k] = {"at_n": g_l[k] / n_l, "slope": slope,
                                "fixed_bytes": g_s[k] - slope * n_s}
    out["flat_limit_bytes"] = max(FLAT_BYTES_PER_SAMPLE * n_l, FLAT_FLOOR_BYTES)
    return out


def structure_slopes(small: dict, large: dict, min_per_sample: float = 0.25) -> List[dict]:
    """What each structure costs per additional sample (bytes, between the two runs)."""
    n_s, n_l = small["samples"], large["samples"]
    before = {r["path"]: r["bytes"] for r in small["structures"]}
    rows = []
    for r in large["structures"]:
        slope = (r["bytes"] - before.get(r["path"], 0)) / (n_l - n_s)
        if abs(slope) >= min_per_sample or r["bytes"] / n_l >= 1:
            rows.append(dict(r, slope=slope, at_n=r["bytes"] / n_l))
    return rows


def targets(small: dict, large: dict, fig: dict, killed: Optional[dict]) -> List[dict]:
    """The memory targets, each with the figure that decides it, met or not.

    Target 1 is given three ways (see the module docstring for the kinds of mapping);
    target 2 two ways (RSS without shared mappings; copy-on-write, i.e. inherited
    anonymous pages turned private); target 3 after ``dataset.close()`` and after a
    SIGKILL.
    """
    ps, n, limit = fig["per_sample"], large["samples"], TARGET_BYTES_PER_SAMPLE
    g = fig["large"]
    cache_ok = g["memfd"] <= large["budget_bytes"] + large["store_meta_bytes"] + (1 << 20)
    steps = [{s["step"]: s for s in run["cleanup"]} for run in (small, large)]
    closed = [st["dataset.close()"] for st in steps]
    dropped = [st["del loader; gc.collect()"] for st in steps]
    after = [s for run in (small, large) for s in run["cleanup"][1:]]
    fds = max(s["memfd_fds"] for s in closed)
    shm = sorted({x for s in after for x in s["new_shm"]})
    stray = max(max(s["workers_alive"] for s in after), max(s["extra_threads"] for s in closed))
    has_workers = bool(large["epochs"][0]["workers"])
    flat = fig["flat_limit_bytes"]
    flat_text = f"<= max({FLAT_BYTES_PER_SAMPLE} B/sample, {FLAT_FLOOR_BYTES >> 20} MiB)"
    return [
        {"target": f"1. main RSS beyond the cache budget <= {limit} B/sample at N={n}, "
                   "as written (total RSS, fixed costs included)",
         "figure": f"{ps['beyond_budget']['at_n']:.1f} B/sample",
         "met": ps["beyond_budget"]["at_n"] <= limit},
        {"target": "1. same without the source's page cache (LMDB pages the prefetch "
                   "threads mapped)",
         "figure": f"{ps['beyond_budget_excl_source']['at_n']:.1f} B/sample (LMDB pages "
                   f"{g['source'] / n:.0f} B/sample)",
         "met": ps["beyond_budget_excl_source"]["at_n"] <= limit and cache_ok},
        {"target": "1. metadata per additional sample (RSS without memfd cache, LMDB page "
                   "cache and torch shm; slope between the runs); memfd within budget",
         "figure": f"{ps['metadata']['slope']:.1f} B/sample + "
                   f"{ps['metadata']['fixed_bytes'] / 2**20:.1f} MiB fixed (after "
                   f"malloc_trim: {ps['metadata_after_trim']['slope']:.1f}); memfd "
                   f"{g['memfd'] / 2**20:.1f} of {large['budget_bytes'] / 2**20:.1f} MiB",
         "met": ps["metadata"]["slope"] <= limit and cache_ok},
        {"target": f"2. worker RSS flat from epoch 1 to {len(large['epochs'])}, shared "
                   f"mappings (memfd cache, LMDB, torch shm) left out, {flat_text}",
         "figure": f"{g['worker_rss_excl_shared'] / 2**20:+.2f} MiB (raw RSS "
                   f"{g['worker_rss'] / 2**20:+.2f} MiB: pages of the shared cache and "
                   "the LMDB file it touched)",
         "met": has_workers and g["worker_rss_excl_shared"] <= flat},
        {"target": f"2. worker copy-on-write: inherited pages turned private, {flat_text}",
         "figure": f"{g['worker_anon_private'] / 2**20:+.2f} MiB per worker (N={small['samples']}"
                   f": {fig['small']['worker_anon_private'] / 2**20:+.2f} MiB)",
         "met": has_workers and g["worker_anon_private"] <= flat},
        {"target": "3. nothing left after del loader + dataset.close() (memfd fds, our "
                   "/dev/shm names, workers, threads)",
         "figure": f"memfd fds {fds:+d}, /dev/shm {shm or 'none'}, workers/threads "
                   f"{stray:+d} (after del loader alone: threads "
                   f"{max(s['extra_threads'] for s in dropped):+d}, memfd fds "
                   f"{max(s['memfd_fds'] for s in dropped):+d}, kept by the dataset)",
         "met": fds <= 0 and not shm and stray <= 0},
        {"target": "3. SIGKILLed owner with workers: workers exit, no /dev/shm name or "
                   "descriptor left",
         "figure": "skipped" if killed is None else "clean" if killed["ok"] else
                   f"NOT clean: {killed}",
         "met": killed is not None and killed["ok"]},
    ]


def print_run(run: dict) -> None:
    """Per-epoch table of one run (main process and workers) and its cleanup steps."""
    n, mib, b = run["samples"], 2 ** 20, run["before"]
    print(f"\nN={n} records of {run['record_bytes']:.0f} B; cache "
          f"{run['cache_bytes'] / mib:.1f} MiB + staging {run['staging_bytes'] / mib:.1f} "
          f"MiB = budget {run['budget_bytes'] / mib:.1f} MiB; {run['store_slots']} store "
          f"slots, store metadata (memfd) {run['store_meta_bytes'] / mib:.2f} MiB")
    head = (f"{'snapshot':>9} {'s':>5} {'RSS':>7} {'anon':>7} {'memfd':>6} {'source':>6} "
            f"{'shm':>5} {'USS':>7} {'PSS':>7} {'RSS-budget':>10} {'metadata':>9}"
            "  workers RSS/anon private")
    print(head + "\n" + "-" * len(head))
    rows = [("before", None, b, []), ("built", None, run["built"], [])]
    rows += [(f"epoch {e['epoch']}", e["seconds"], e["main"], e["workers"])
             for e in run["epochs"]]
    if run.get("trimmed"):
        rows.append(("trimmed", None, run["trimmed"], []))
    for name, secs, m, ws in rows:
        strict = (m["rss"] - b["rss"] - run["budget_bytes"]) / n
        shared = sum(m[k] - b[k] for k in ("source_rss", "memfd_rss", "shm_rss"))
        w = " ".join(f"{x['rss'] / mib:.0f}/{x['anon_private'] / mib:.1f}" for x in ws)
        print(f"{name:>9} {'' if secs is None else f'{secs:.1f}':>5} "
              + " ".join(f"{m[k] / mib:{wd}.1f}" for k, wd in (
                  ("rss", 7), ("rss_anon", 7), ("memfd_rss", 6), ("source_rss", 6),
                  ("shm_rss", 5), ("uss", 7), ("pss", 7)))
              + f" {strict:8.1f} B {(m['rss'] - b['rss'] - shared) / n:7.1f} B  {w}")
    print("MiB, except the B columns: bytes per sample of growth since 'before'. Main USS"
          "/PSS drop once forked workers share its pages; 'trimmed': after the last epoch "
          "and malloc_trim(0).")
    traced = [(e["epoch"], e["traced"], e["traced_peak"]) for e in run["epochs"]
              if "traced" in e]
    if traced:
        print("  tracemalloc (live / peak within the epoch, B/sample): " + ", ".join(
            f"{i}: {t / n:.0f}/{p / n:.0f}" for i, t, p in traced))
    for s in run["cleanup"]:
        print(f"  {s['step']:<26} memfd fds {s['memfd_fds']:+d}  workers alive "
              f"{s['workers_alive']}  new /dev/shm ours {s['new_shm'] or 'none'} (others' "
              f"{s['other_new_shm']})  extra threads "
              f"{s['extra_threads']:+d}" + (f"  memfds: {', '.join(s['memfd_names'])}"
                                            if s["memfd_fds"] > 0 else ""))


def print_report(report: dict) -> None:
    """Both runs, the per-sample figures, the cost breakdown and the targets."""
    small, large, fig = report["small"], report["large"], report["figures"]
    print_run(small)
    print_run(large)
    n_s, n_l = small["samples"], large["samples"]
    print(f"\nMain-process growth (largest epoch-end snapshot), N={n_s} and N={n_l}:")
    print(f"  {'kind':<26} {'N small MiB':>11} {'N large MiB':>11} {'B/sample at N':>13} "
          f"{'B/extra sample':>14} {'fixed MiB':>9}")
    for k in MAIN_KINDS:
        p = fig["per_sample"][k]
        print(f"  {k:<26} {fig['small'][k] / 2**20:11.2f} {fig['large'][k] / 2**20:11.2f} "
              f"{p['at_n']:13.1f} {p['slope']:14.1f} {p['fixed_bytes'] / 2**20:9.2f}")
    print(f"  worker growth (anon private or RSS excl. shared) epoch 1 -> "
          f"{len(large['epochs'])}: N={n_s} "
          f"{fig['small']['worker_growth'] / 2**20:+.2f} MiB, N={n_l} "
          f"{fig['large']['worker_growth'] / 2**20:+.2f} MiB")
    killed = report.get("killed")
    if killed is not None:
        print(f"\nSIGKILLed child: {json.dumps(killed)}")
    print(f"\nHeap structures reachable from the sampler and the dataset at N={n_l} "
          "(B/sample at N, and per additional sample):")
    for r in structure_slopes(small, large):
        print(f"  {r['at_n']:6.1f} {r['slope']:6.1f}  {r['bytes'] / 2**20:6.2f} MiB  "
              f"{'shared ' if r['shared'] else ''}{r['path']}  {r['what']}")
    for r in large.get("tracemalloc", []):
        print(f"  tracemalloc {r['bytes'] / n_l:7.1f} B/sample  {r['site']} "
              f"({r['blocks']:+d} blocks)")
    print("\nTargets:")
    for t in report["targets"]:
        print(f"  [{'met' if t['met'] else 'NOT met':>7}] {t['target']}: {t['figure']}")


# ---------------------------------------------------------------- command line
def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], epilog=__doc__.split(
        "\n\n", 1)[1], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--samples", type=int, default=200_000,
                   help="records N of the measured run (default 200000: ~3.5 min on 2 "
                        "busy cores once the data are written); a second run with N/8 "
                        "(at least 1000) gives the per-sample slope")
    p.add_argument("--record-bytes", type=int, default=512,
                   help="record size asked of the generator (default 512; records come "
                        "out ~590 bytes with the 64 float32 features)")
    p.add_argument("--epochs", type=int, default=10, help="epochs (default 10)")
    p.add_argument("--workers", type=int, default=2, help="DataLoader workers (default 2)")
    p.add_argument("--batch-size", type=int, default=256, help="default 256")
    p.add_argument("--cache-fraction", type=float, default=0.2,
                   help="cache_bytes as a share of the dataset bytes (default 0.2)")
    p.add_argument("--start-method", choices=("fork", "spawn", "forkserver"), default=None,
                   help="worker start method (default: torch's, fork on Linux)")
    p.add_argument("--policy", default=DEFAULT_POLICY,
                   help=f"selection policy (default {DEFAULT_POLICY!r})")
    p.add_argument("--cache-policy", default=DEFAULT_CACHE_POLICY,
                   help=f"cache policy (default {DEFAULT_CACHE_POLICY!r})")
    p.add_argument("--data-dir", default=os.path.expanduser("~/.cache/impact-loader/bench"),
                   help="where the LMDBs are written once and reused")
    p.add_argument("--json", metavar="PATH", help="write the report as JSON")
    p.add_argument("--tracemalloc", action="store_true",
                   help="also trace Python allocations (slower; inflates RSS figures)")
    p.add_argument("--gc-freeze", action="store_true",
                   help="call gc.freeze() before the workers fork (tests whether worker "
                        "copy-on-write growth comes from garbage collections touching "
                        "inherited objects)")
    p.add_argument("--no-kill", action="store_true", help="skip the SIGKILL check")
    p.add_argument("--quick", action="store_true",
                   help="smoke run: 4000 records (and 1000), 3 epochs, batch 128")
    for hidden in ("--measure", "--child"):  # child runs of this script
        p.add_argument(hidden, action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--data", help=argparse.SUPPRESS)
    p.add_argument("--record", type=float, help=argparse.SUPPRESS)
    p.add_argument("--out", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.quick:
        args.samples, args.epochs, args.batch_size = min(args.samples, 4000), 3, 128
    least = 1000 if args.measure or args.child else 2000
    if args.samples < least or args.epochs < 1 or args.workers < 0 or args.batch_size < 1:
        p.error(f"--samples={args.samples} must be >= 2000 (two runs, N and N/8 >= 1000), "
                "--epochs and --batch-size >= 1, --workers >= 0")
    if not 0.0 < args.cache_fraction <= 1.0:
        p.error(f"--cache-fraction={args.cache_fraction} must be in (0, 1]")
    return args


def main(argv: Optional[List[str]] = None) -> dict:
    args = parse_args(argv)
    if args.measure or args.child:
        if args.child:
            child_main(args)
        else:
            with open(args.out, "w") as f:
                json.dump(measure(args), f)
        return {}
    n_small = max(1000, args.samples // 8)
    print(f"policy={args.policy} cache_policy={args.cache_policy} workers={args.workers} "
          f"start_method={args.start_method or torch.multiprocessing.get_start_method()} "
          f"N={args.samples} and {n_small}, epochs={args.epochs}, batch={args.batch_size}",
          flush=True)
    runs, data = [], {}
    for n in (n_small, args.samples):
        data[n] = prepare_data(args, n)
        runs.append(run_measure(args, n, *data[n]))
    killed = None
    if not args.no_kill and args.workers > 0:
        killed = kill_child(args, data[n_small][0], n_small, data[n_small][1])
    fig = figures(*runs)
    report = {"command": "python benchmarks/memory.py " + " ".join(
                  sys.argv[1:] if argv is None else argv),
              "args": {k: v for k, v in vars(args).items()
                       if k not in ("measure", "child", "data", "record", "out")},
              "small": runs[0], "large": runs[1], "figures": fig, "killed": killed,
              "structures": structure_slopes(*runs)}
    report["targets"] = targets(runs[0], runs[1], fig, killed)
    print_report(report)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(report, f, indent=1)
    return report


if __name__ == "__main__":
    main()
