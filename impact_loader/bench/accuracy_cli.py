"""Command line of the accuracy benchmark: ``impact-bench accuracy`` options and main."""

from __future__ import annotations

import argparse
from typing import Any, Dict, List, Sequence

from .accuracy_data import DATASETS, DEFAULTS, QUICK

__all__ = ["add_arguments", "main"]


def _names(valid: Sequence[str]):
    def parse(text: str) -> List[str]:
        names = [t.strip() for t in text.split(",") if t.strip()]
        bad = [n for n in names if n not in valid]
        if bad or not names:
            raise argparse.ArgumentTypeError(f"{text!r}: give a comma-separated list "
                                             f"from {','.join(valid)}")
        return names
    return parse


def _seeds(text: str) -> List[int]:
    try:
        seeds = [int(t) for t in text.split(",") if t.strip()]
    except ValueError:
        seeds = []
    if not seeds or min(seeds) < 0:
        raise argparse.ArgumentTypeError(f"{text!r} must be comma-separated ints >= 0, "
                                         "e.g. 0,1,2")
    return seeds


def _number(kind: type, low: float, high: float = float("inf"), low_open: bool = False):
    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a {kind.__name__}") from None
        if not ((value > low if low_open else value >= low) and value <= high):
            raise argparse.ArgumentTypeError(
                f"{value} must be {'>' if low_open else '>='} {low:g}"
                + (f" and <= {high:g}" if high < float("inf") else ""))
        return value
    return parse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the accuracy benchmark's options to ``parser`` (e.g. a sub-command's)."""
    from impact_loader.sampling.registry import POLICIES

    a = parser.add_argument
    a("--datasets", type=_names(DATASETS), default=list(DATASETS), metavar="LIST",
      help=f"comma-separated datasets from {','.join(DATASETS)} (default: all)")
    a("--policies", type=_names(tuple(POLICIES)), default=["uniform", "impact"],
      metavar="LIST",
      help="comma-separated selection policies to compare (default: uniform,impact)")
    a("--seeds", type=_seeds, default=[0, 1, 2], metavar="LIST",
      help="comma-separated seeds, one run each (default: 0,1,2)")
    a("--epochs", type=_number(int, 1), default=None, metavar="N",
      help=f"epochs per run, the same for every policy (default: {DEFAULTS['epochs']}; "
           f"--quick: {QUICK['epochs']})")
    a("--batch-size", type=_number(int, 1), default=128, metavar="N",
      help="samples per batch (default: 128)")
    a("--workers", type=_number(int, 0), default=0, metavar="N",
      help="DataLoader worker processes; 0 loads in the training process (default: 0)")
    a("--lr", type=_number(float, 0, low_open=True), default=0.05,
      help="SGD learning rate (default: 0.05)")
    a("--cache-fraction", type=_number(float, 0, 1), default=0.2, metavar="F",
      help="cache size as a share of the training set's bytes, 0-1; 0 disables the "
           "cache (default: 0.2)")
    a("--synthetic-samples", type=_number(int, 64), default=None, metavar="N",
      help=f"training samples of the synthetic task (default: "
           f"{DEFAULTS['synthetic_samples']}; --quick: {QUICK['synthetic_samples']})")
    a("--synthetic-test-samples", type=_number(int, 1), default=None, metavar="N",
      help=f"held-out test samples of the synthetic task (default: "
           f"{DEFAULTS['synthetic_test_samples']}; --quick: "
           f"{QUICK['synthetic_test_samples']})")
    a("--torch-threads", type=_number(int, 1), default=1, metavar="N",
      help="torch intra-op threads for training (default: 1)")
    a("--quick", action="store_true",
      help=f"smoke run in seconds: {QUICK['epochs']} epochs, {QUICK['synthetic_samples']} "
           "synthetic samples (explicit options win)")
    a("--quiet", action="store_true", help="no progress bar")


def main(args: argparse.Namespace) -> Dict[str, Any]:
    """Run the benchmark from parsed ``args``, print the table, return the result dict."""
    from .accuracy import format_table, run_accuracy

    result = run_accuracy(datasets=args.datasets, policies=args.policies, seeds=args.seeds,
                          epochs=args.epochs, batch_size=args.batch_size,
                          workers=args.workers, lr=args.lr,
                          cache_fraction=args.cache_fraction,
                          synthetic_samples=args.synthetic_samples,
                          synthetic_test_samples=args.synthetic_test_samples,
                          torch_threads=args.torch_threads, quick=args.quick,
                          progress=not args.quiet)
    print(format_table(result), flush=True)
    return result
