"""Train a small MLP on scikit-learn's digits with impact-loader, on emulated slow storage.

The digits (1797 8x8 images, bundled with scikit-learn: nothing is downloaded) are
split into a training and a held-out test set. The training set is written to an LMDB
and read through a ``ThrottledSource`` that makes every read cost what it would on the
chosen storage (``--storage nfs``: 4 ms per request, 100 MB/s, 8 requests in flight).
An ``ImpactLoader`` plans each epoch from the per-sample losses the loop reports with
``loader.update``, caches what matters in shared memory and prefetches the rest.

    python examples/train_digits.py                      # 15 epochs, nfs, policy impact
    python examples/train_digits.py --policy uniform     # every sample once per epoch
    python examples/train_digits.py --storage local      # no emulated latency
    python examples/train_digits.py --fast               # short run (used by the tests)
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from typing import Any, Dict, List, Optional

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.datasets import load_digits

import impact_loader as il

POLICIES = ("impact", "uniform", "importance", "selective")
STORAGE = tuple(il.PROFILES) + ("local",)


def _to_xy(sample: Dict[str, Any]):
    """Runs in the DataLoader workers: pixels 0..16 -> floats in [0, 1], and the label."""
    return torch.from_numpy(sample["x"]) / 16.0, sample["label"]


def digits_split(test_fraction: float, seed: int):
    """Shuffle the digits and split them: ``(x_train, y_train, x_test, y_test)``.

    Images are float32 vectors of 64 pixels in 0..16, labels int64 in 0..9.
    """
    x, y = load_digits(return_X_y=True)
    order = np.random.default_rng(seed).permutation(len(y))
    x, y = x[order].astype(np.float32), y[order].astype(np.int64)
    n_test = int(round(test_fraction * len(y)))
    return x[n_test:], y[n_test:], x[:n_test], y[:n_test]


def _parse(argv: Optional[List[str]]) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--storage", default="nfs", choices=STORAGE,
                    help="emulated storage profile (see impact_loader.PROFILES; "
                         "'local' reads the LMDB with no added latency). Default nfs")
    ap.add_argument("--policy", default="impact", choices=POLICIES,
                    help="selection policy of the ImportanceSampler. Default impact")
    ap.add_argument("--epochs", type=int, default=None,
                    help="training epochs (default 15; 4 with --fast)")
    ap.add_argument("--batch-size", type=int, default=64, help="samples per batch")
    ap.add_argument("--workers", type=int, default=2,
                    help="DataLoader worker processes (0 reads in the main process)")
    ap.add_argument("--cache-fraction", type=float, default=0.5,
                    help="shared cache size as a share of the training set's bytes, "
                         "in [0, 1]; 0 disables the cache. Default 0.5")
    ap.add_argument("--warmup-epochs", type=int, default=None,
                    help="epochs over the full data before importance selection starts "
                         "(policy impact; default: the library's, 1 with --fast)")
    ap.add_argument("--lr", type=float, default=3e-3, help="Adam learning rate")
    ap.add_argument("--test-fraction", type=float, default=0.2,
                    help="share of the digits held out for testing, in (0, 1)")
    ap.add_argument("--data", default=None,
                    help="directory for the LMDB (kept afterwards; default: a temporary "
                         "directory removed at the end)")
    ap.add_argument("--seed", type=int, default=0,
                    help="seed of the split, model and plans")
    ap.add_argument("--fast", action="store_true",
                    help="short run for tests: 4 epochs, 1 warm-up epoch")
    args = ap.parse_args(argv)
    if args.epochs is None:
        args.epochs = 4 if args.fast else 15
    if args.warmup_epochs is None and args.fast:
        args.warmup_epochs = 1
    if args.epochs < 1:
        ap.error(f"--epochs {args.epochs} must be >= 1")
    if not 0.0 <= args.cache_fraction <= 1.0:
        ap.error(f"--cache-fraction {args.cache_fraction} must be in [0, 1]; "
                 "0 disables the cache")
    if not 0.0 < args.test_fraction < 1.0:
        ap.error(f"--test-fraction {args.test_fraction} must be in (0, 1), e.g. 0.2")
    return args


def run(args: argparse.Namespace, data_dir: str) -> Dict[str, Any]:
    """Write the LMDB under ``data_dir``, train, and return the results."""
    x_train, y_train, x_test, y_test = digits_split(args.test_fraction, args.seed)
    path = os.path.join(data_dir, "digits-train.lmdb")
    lmdb_source = il.write_lmdb(path, ({"x": x, "label": int(y)}
                                       for x, y in zip(x_train, y_train)), overwrite=True)
    source = (lmdb_source if args.storage == "local"
              else il.ThrottledSource(lmdb_source, profile=args.storage))
    record_bytes = len(lmdb_source.read_many([0])[0])
    cache_bytes = int(args.cache_fraction * len(lmdb_source) * record_bytes)
    dataset = il.ImpactDataset(source, transform=_to_xy, cache_bytes=cache_bytes)
    options = {} if args.warmup_epochs is None else {"warmup_epochs": args.warmup_epochs}
    loader = il.ImpactLoader(dataset, batch_size=args.batch_size, policy=args.policy,
                             seed=args.seed, num_workers=args.workers,
                             sampler_options=options)
    print(f"{len(lmdb_source)} training samples of {record_bytes} bytes on "
          f"{args.storage!r} storage, cache {cache_bytes / 2**10:.0f} KiB, "
          f"policy {args.policy!r}, {args.workers} workers", flush=True)

    torch.manual_seed(args.seed)
    model = torch.nn.Sequential(torch.nn.Linear(64, 128), torch.nn.ReLU(),
                                torch.nn.Linear(128, 10))
    opt = torch.optim.Adam(model.parameters(), lr=args.lr)
    x_test_t, y_test_t = torch.from_numpy(x_test) / 16.0, torch.from_numpy(y_test)
    accuracy: List[float] = []
    seconds: List[float] = []
    waits: List[float] = []
    trained = 0
    try:
        for epoch in range(args.epochs):
            start = time.perf_counter()
            loader.set_epoch(epoch)
            model.train()
            for (x, y), idx in loader:             # idx: the samples actually delivered
                losses = F.cross_entropy(model(x), y, reduction="none")
                # Weights are 1 except under policy "importance", where they unbias
                # the sampled loss.
                (losses * loader.sampler.weights(idx)).mean().backward()
                opt.step()
                opt.zero_grad()
                loader.update(idx, losses.detach())
                trained += len(idx)
            seconds.append(time.perf_counter() - start)
            waits.append(sum(loader.data_wait))  # seconds the loop waited for batches
            model.eval()
            with torch.no_grad():
                acc = (model(x_test_t).argmax(1) == y_test_t).float().mean().item()
            accuracy.append(acc)
            print(f"epoch {epoch:2d}: {len(loader.data_wait):3d} batches in "
                  f"{seconds[-1]:.2f} s (waiting for data {waits[-1]:.2f} s), "
                  f"test accuracy {acc:.3f}", flush=True)
        stats = loader.stats()
    finally:
        dataset.close()
        lmdb_source.close()
    # Cache counters exist only with a cache (cache_bytes > 0).
    hits, subs = stats.get("hits", 0), stats.get("substitutions", 0)
    planned = stats.get("planned", trained)
    hit_ratio = (hits + subs) / max(1, planned)
    print(f"cache: {hits} hits + {subs} substitutions of {planned} planned samples "
          f"(hit ratio {hit_ratio:.0%}); storage: {stats.get('storage_requests', 0)} "
          f"prefetch requests, {stats['worker_source_reads']} worker reads; waited for "
          f"data {sum(waits):.2f} s of {sum(seconds):.2f} s")
    return {"test_accuracy": accuracy[-1], "accuracy_per_epoch": accuracy,
            "epoch_seconds": seconds, "samples_trained": trained,
            "train_samples": len(x_train), "test_samples": len(x_test),
            "hits": hits, "substitutions": subs, "planned": planned,
            "hit_ratio": hit_ratio,
            "data_wait_seconds": waits}


def main(argv: Optional[List[str]] = None) -> Dict[str, Any]:
    """Parse ``argv`` (default ``sys.argv[1:]``), train, return the results dict."""
    args = _parse(argv)
    if args.data is not None:
        os.makedirs(args.data, exist_ok=True)
        return run(args, args.data)
    with tempfile.TemporaryDirectory(prefix="impact-digits-") as tmp:
        return run(args, tmp)


if __name__ == "__main__":
    main()
    sys.exit(0)
