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
    python benchmarks/memory.py --malloc-arena-max 2   # glibc arenas shared by threads

This file is the command line; the work is in ``memlib/`` next to it (/proc readers,
the measured run, the kill check, figures and targets, the printed report).
"""

from __future__ import annotations

import argparse
import inspect
import json
import os
import sys
from typing import List, Optional

_HERE = os.path.dirname(os.path.abspath(__file__))
if _HERE not in sys.path:  # loaded by path (the tests): memlib/ is next to this script
    sys.path.insert(0, _HERE)

import torch  # noqa: E402

import impact_loader as il  # noqa: E402
from memlib.figures import figures, structure_slopes, targets  # noqa: E402
from memlib.kill import child_main, kill_child  # noqa: E402
from memlib.report import print_report  # noqa: E402
from memlib.run import measure, prepare_data, run_measure  # noqa: E402

DEFAULT_POLICY = inspect.signature(il.ImpactLoader.__init__).parameters["policy"].default
DEFAULT_CACHE_POLICY = inspect.signature(
    il.ImpactDataset.__init__).parameters["cache_policy"].default


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
    p.add_argument("--malloc-arena-max", type=int, default=0, metavar="K",
                   help="run the measured interpreters with MALLOC_ARENA_MAX=K (glibc: "
                        "at most K malloc arenas, so the 16 prefetch threads share them "
                        "instead of keeping one each); default 0: glibc's default, 8 per "
                        "core")
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
    if args.malloc_arena_max < 0:
        p.error(f"--malloc-arena-max={args.malloc_arena_max} must be >= 0 (0: glibc's "
                "default)")
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
