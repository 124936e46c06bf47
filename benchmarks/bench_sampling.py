"""Benchmark of the sampling layer: epoch planning and ``update()`` latency.

Targets (one core): planning an epoch of N=1,000,000 samples under 0.5 s; ``update()`` of a
256-sample batch under 50 us. Setup (table filled with losses), warm-up (one untimed run)
and measurement (best and median of ``--repeats`` runs) are separate; all policies run
side by side in the same process, and the ratio to ``uniform`` (a plain permutation) is
printed next to the raw figures.

Run:  python benchmarks/bench_sampling.py [--n 1000000] [--batch 256] [--repeats 5]
(pin to one core with ``taskset -c 0`` for the one-core figure).
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import torch

from impact_loader.sampler import ImportanceSampler
from impact_loader.sampling import POLICIES


def _timed(fn, repeats):
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times), statistics.median(times)


def bench_planning(n, batch, repeats, seed):
    """Time building one epoch plan (policy selection + rank share + batching)."""
    rows = {}
    losses = np.random.default_rng(seed).gamma(2.0, 1.0, n)
    for name in POLICIES:
        # Setup: a table where every sample has been scored; a selection epoch for impact.
        s = ImportanceSampler(range(n), batch, name, seed, warmup_epochs=0, refresh_every=0)
        s.update(np.arange(n), losses)
        epoch = [0]

        def plan():
            epoch[0] += 1
            s.set_epoch(epoch[0])
            s.epoch_plan()

        rows[name] = _timed(plan, repeats)
    return rows


def bench_update(n, batch, calls, rounds, seed, kind):
    """Time ``update()`` of one batch (numpy or CPU torch inputs), averaged over calls."""
    s = ImportanceSampler(range(n), batch, "impact", seed)
    rng = np.random.default_rng(seed)
    idx = [rng.integers(0, n, batch) for _ in range(64)]
    loss = [rng.random(batch) for _ in range(64)]
    if kind == "torch":
        idx = [torch.from_numpy(i) for i in idx]
        loss = [torch.from_numpy(x).float() for x in loss]
    for i in range(256):  # warm-up
        s.update(idx[i % 64], loss[i % 64])
    # Rounds of calls; the best round is the figure least disturbed by other processes.
    per_round = max(1, calls // rounds)
    means = []
    for _ in range(rounds):
        t0 = time.perf_counter()
        for i in range(per_round):
            s.update(idx[i % 64], loss[i % 64])
        means.append((time.perf_counter() - t0) / per_round)
    return min(means), statistics.median(means)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=1_000_000, help="samples in the data set")
    ap.add_argument("--batch", type=int, default=256, help="samples per update() call")
    ap.add_argument("--repeats", type=int, default=5, help="timed planning runs per policy")
    ap.add_argument("--calls", type=int, default=20000, help="timed update() calls")
    ap.add_argument("--rounds", type=int, default=100, help="rounds the calls are split into")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)

    print(f"numpy {np.__version__}, torch {torch.__version__}, "
          f"torch threads {torch.get_num_threads()}")
    print(f"\nplanning one epoch, N={args.n:,}, batch {args.batch} "
          f"(best / median of {args.repeats}, seconds; target < 0.5 s)")
    rows = bench_planning(args.n, args.batch, args.repeats, args.seed)
    base = rows["uniform"][0]
    for name, (best, med) in rows.items():
        print(f"  {name:<11} best {best:7.3f}  median {med:7.3f}  x{best / base:5.2f} uniform")
    print(f"\nupdate() of a {args.batch}-sample batch, {args.calls:,} calls in "
          f"{args.rounds} rounds (best / median round mean, microseconds; target < 50 us)")
    for kind in ("numpy", "torch"):
        best, med = bench_update(args.n, args.batch, args.calls, args.rounds, args.seed, kind)
        print(f"  {kind:<6} inputs  best {best * 1e6:6.1f}  median {med * 1e6:6.1f}")


if __name__ == "__main__":
    main()
