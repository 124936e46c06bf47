"""``impact-bench``: how fast does training read your data, with and without impact-loader?

    impact-bench                                 # built-in dataset, emulated NFS (~3 min)
    impact-bench --source train.lmdb --storage cold
    impact-bench --cache-fraction 0.1,0.2,0.4 --plot sweep.png --json sweep.json
    impact-bench accuracy                        # uniform vs impact test accuracy
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from typing import Any, Dict, List, Optional

from ..errors import ImpactLoaderError
from . import accuracy, accuracy_cli
from .loaders import LOADERS, parse_loaders
from .instruments import environment
from .report import format_report, plot_report
from .runner import default_data_dir, run_scenario
from .scenario import STORAGE_CHOICES, Scenario, Storage

__all__ = ["main", "build_parser", "scenario_from_args"]

LOADER_HELP = "; ".join(f"{s.name}: {s.description}" for s in LOADERS.values())


def _fractions(text: str) -> List[float]:
    try:
        values = [float(t) for t in text.split(",") if t.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} must be a number or comma-separated "
                                         "numbers, e.g. 0.2 or 0.1,0.2,0.4") from None
    bad = [v for v in values if not (0 < v <= 2) or math.isnan(v)]
    if not values or bad:
        raise argparse.ArgumentTypeError(f"cache fraction(s) {bad or text!r} must be in "
                                         "(0, 2]: a share of the dataset's bytes")
    return values


def _loaders(text: str) -> List[str]:
    try:
        return parse_loaders(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _count(minimum: int):
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"{value} must be >= {minimum}")
        return value
    return parse


def _nonnegative(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not value >= 0 or math.isinf(value):
        raise argparse.ArgumentTypeError(f"{value} must be a finite number >= 0")
    return value


def build_parser() -> argparse.ArgumentParser:
    """The ``impact-bench`` argument parser (the I/O benchmark's options)."""
    p = argparse.ArgumentParser(
        prog="impact-bench",
        description="Train side by side through a plain PyTorch DataLoader, baseline "
                    "caches and impact-loader, on the built-in synthetic dataset or "
                    "your own LMDB/Arrow data, over emulated or real storage; print "
                    "epoch times, hit ratios, storage traffic, data-wait, the ratio to "
                    "the physical bound and test accuracy. 'impact-bench accuracy "
                    "--help' describes the accuracy benchmark.",
        epilog="Examples:\n  impact-bench\n  impact-bench --source train.lmdb --storage "
               "cold --loaders plain,impact\n  impact-bench --cache-fraction 0.1,0.2,0.4 "
               "--plot sweep.png --json sweep.json",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    a = p.add_argument
    a("--source", metavar="PATH",
      help="your dataset: an LMDB directory or Arrow shard(s) (see 'impact-loader "
           "convert'). Without it, a built-in synthetic 10-class task is written once to "
           "--data-dir and a real MLP is trained on it. With it, no model is trained: "
           "each step sleeps --compute-ms and reports a synthetic per-sample loss, so "
           "accuracy is n/a")
    a("--storage", default="nfs", choices=STORAGE_CHOICES, metavar="NAME",
      help="how the data is reached: an emulated profile (" + ", ".join(
          s for s in STORAGE_CHOICES if s not in ("local", "cold")) + "; latency, "
      "bandwidth and requests in flight as documented in impact_loader.throttle), "
      "'local' (real reads, page cache warm) or 'cold' (real reads, page cache dropped "
      "before every epoch). Default: nfs (4 ms, 100 MB/s, 8 in flight)")
    a("--latency-ms", type=_nonnegative, metavar="MS",
      help="override the profile's per-request latency (milliseconds)")
    a("--bandwidth-mb-s", type=_nonnegative, metavar="MB_S",
      help="override the profile's bandwidth (megabytes per second)")
    a("--inflight", type=_count(1), metavar="N",
      help="override the profile's requests served at once")
    a("--cache-fraction", type=_fractions, default=[0.2], metavar="F[,F...]",
      help="cache size as a share of the dataset's bytes, in (0, 2]; several values "
           "sweep them (one full comparison each). Default: 0.2")
    a("--loaders", type=_loaders, default=list(LOADERS), metavar="LIST",
      help="comma-separated loaders to compare, or 'all' (default). " + LOADER_HELP)
    a("--epochs", type=_count(2), default=5, metavar="N",
      help="epochs per loader, including --warmup ones (default: 5)")
    a("--warmup", type=_count(0), default=1, metavar="N",
      help="leading epochs of each loader not measured; the table shows the median "
           "of the rest (default: 1)")
    a("--workers", type=_count(0), default=2, metavar="N",
      help="DataLoader worker processes (default: 2)")
    a("--batch-size", type=_count(1), default=128, metavar="N",
      help="samples per batch (default: 128)")
    a("--compute-ms", type=_nonnegative, default=10.0, metavar="MS",
      help="milliseconds per training step standing in for the accelerator, on top of "
           "the built-in task's small CPU model (default: 10)")
    a("--seed", type=_count(0), default=0, metavar="N",
      help="seeds the dataset, models and samplers (default: 0)")
    a("--samples", type=_count(256), default=4000, metavar="N",
      help="records in the built-in dataset (default: 4000)")
    a("--record-bytes", type=_count(512), default=8192, metavar="BYTES",
      help="bytes per built-in record (default: 8192)")
    a("--test-samples", type=_count(0), default=1000, metavar="N",
      help="held-out samples for the built-in task's test accuracy (default: 1000)")
    a("--start-method", default="fork", choices=("fork", "spawn", "forkserver"),
      help="DataLoader worker start method (default: fork)")
    a("--sampler-warmup-epochs", type=_count(0), metavar="N",
      help="override impact's sampler warm-up epochs (default: the library's)")
    a("--staging-mib", type=_nonnegative, metavar="MIB",
      help="override impact-loader's staging budget (MiB; default: the library's)")
    a("--data-dir", default=default_data_dir(), metavar="DIR",
      help="where the built-in dataset is written once and reused (default: %(default)s)")
    a("--json", metavar="PATH", help="write every figure, per epoch, to PATH as JSON")
    a("--plot", metavar="PATH",
      help="write a PNG: epoch time and hit ratio per loader (and hit ratio and epoch "
           "time against the cache fraction when sweeping); needs matplotlib")
    a("--quiet", action="store_true", help="no progress bars or per-epoch lines")
    return p


def scenario_from_args(args: argparse.Namespace,
                       parser: argparse.ArgumentParser) -> Scenario:
    """Validate the parsed options together and build the :class:`Scenario`."""
    if args.epochs <= args.warmup:
        parser.error(f"--epochs={args.epochs} must exceed --warmup={args.warmup} so that "
                     "some epochs are measured")
    try:
        storage = Storage.named(args.storage, latency_ms=args.latency_ms,
                                bandwidth_mb_s=args.bandwidth_mb_s, inflight=args.inflight)
    except ValueError as exc:
        parser.error(str(exc))
    if args.source is not None and not os.path.exists(args.source):
        parser.error(f"--source {args.source!r} does not exist; give an LMDB directory "
                     "or Arrow file/directory (convert other data with 'impact-loader "
                     "convert')")
    if args.source is None and args.samples < args.batch_size:
        parser.error(f"--samples={args.samples} must be at least --batch-size="
                     f"{args.batch_size}")
    if args.plot:
        try:
            import matplotlib  # noqa: F401
        except ImportError:
            parser.error("--plot needs matplotlib: pip install 'impact-loader[plot]'")
    return Scenario(loaders=tuple(args.loaders), storage=storage,
                    cache_fractions=tuple(args.cache_fraction), source=args.source,
                    samples=args.samples, record_bytes=args.record_bytes,
                    test_samples=args.test_samples, epochs=args.epochs,
                    warmup=args.warmup, batch_size=args.batch_size, workers=args.workers,
                    start_method=args.start_method, compute_ms=args.compute_ms,
                    seed=args.seed, sampler_warmup_epochs=args.sampler_warmup_epochs,
                    staging_mib=args.staging_mib, data_dir=args.data_dir)


def _write_json(path: str, report: Dict[str, Any]) -> None:
    with open(path, "w") as fh:
        json.dump(report, fh, indent=1, default=float)


def main(argv: Optional[List[str]] = None) -> int:
    """Entry point of ``impact-bench``; returns the process exit code."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "accuracy":
        sub = argparse.ArgumentParser(prog="impact-bench accuracy",
                                      description=accuracy.__doc__.split("\n\n")[0])
        accuracy_cli.add_arguments(sub)
        sub.add_argument("--json", metavar="PATH", help="write the result to PATH as JSON")
        args = sub.parse_args(argv[1:])
        result = accuracy_cli.main(args)
        if args.json:
            _write_json(args.json, result)
        return 0
    parser = build_parser()
    args = parser.parse_args(argv)
    scenario = scenario_from_args(args, parser)
    started = time.perf_counter()
    env = environment()
    log = (lambda line: None) if args.quiet else (lambda line: print(line, flush=True))
    try:
        report = run_scenario(scenario, progress=not args.quiet, log=log)
    except (ImpactLoaderError, ValueError) as exc:
        print(f"impact-bench: error: {exc}", file=sys.stderr)
        return 2
    env["load_average_after"] = os.getloadavg()
    report.update(environment=env, wall_seconds=time.perf_counter() - started,
                  scenario={k: (v.__dict__ if isinstance(v, Storage) else v)
                            for k, v in scenario.__dict__.items()})
    print(format_report(report))
    print(f"\n{report['wall_seconds']:.0f} s in all; load average {env['load_average'][0]:.2f}"
          f" before, {env['load_average_after'][0]:.2f} after, on {env['cpu_count']} cores")
    if args.json:
        _write_json(args.json, report)
        print(f"figures written to {args.json}")
    if args.plot:
        print(f"plot written to {plot_report(report, args.plot)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
