"""Two-process DistributedDataParallel training on CPU (gloo) with impact-loader.

Each rank is a process with its own ``ImpactDataset`` (and its own shared cache, as on
separate nodes) and ``ImpactLoader``. The ``ImportanceSampler`` inside reads the rank and
world size from ``torch.distributed``: every rank computes the same global plan for an
epoch and takes every ``world_size``-th entry of it, like ``DistributedSampler``, so the
shares are disjoint (apart from padding to equal length) and together cover the epoch's
selected samples. The losses each rank reports with ``loader.update`` are all-gathered
when the epoch changes, so every rank keeps the same importance table and the same plans.
Each rank's cache substitutes low-importance misses with samples it holds, on its own,
so the samples *delivered* can repeat across ranks and miss some of the plan (the
substitute's real index is reported); ``--exactly-once`` turns substitution off.

The data are scikit-learn's bundled digits (nothing is downloaded), written to one LMDB
that every rank reads through emulated storage (``--storage``).

    python examples/ddp_train.py                 # 2 ranks, 10 epochs
    python examples/ddp_train.py --fast          # short run (used by the tests)
    python examples/ddp_train.py --exactly-once  # no cache substitution

Under torchrun one would call ``dist.init_process_group("gloo")`` with the environment
torchrun sets and run ``train_rank`` directly; here ``torch.multiprocessing``
starts the ranks (``--start-method``, spawn by default) so the script runs on its own.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import sys
import tempfile
import time
from typing import Any, Dict, List, Optional

import numpy as np
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F
from torch.nn.parallel import DistributedDataParallel

import impact_loader as il

STORAGE = tuple(il.PROFILES) + ("local",)


def _to_xy(sample: Dict[str, Any]):
    """Pixels 0..16 -> floats in [0, 1], and the label."""
    return torch.from_numpy(sample["x"]) / 16.0, sample["label"]


def digits_split(test_fraction: float, seed: int):
    """Shuffle the digits and split them: ``(x_train, y_train, x_test, y_test)``."""
    from sklearn.datasets import load_digits  # here: spawned ranks need not import it

    x, y = load_digits(return_X_y=True)
    order = np.random.default_rng(seed).permutation(len(y))
    x, y = x[order].astype(np.float32), y[order].astype(np.int64)
    n_test = int(round(test_fraction * len(y)))
    return x[n_test:], y[n_test:], x[:n_test], y[:n_test]


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now (for the rendezvous)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def train_rank(rank: int, world: int, port: int, args: argparse.Namespace,
               lmdb_path: str, test_set: tuple, out_dir: str) -> None:
    """One rank: join the process group, train, write this rank's results as JSON."""
    torch.set_num_threads(1)  # ranks share the machine's cores
    os.environ["MASTER_ADDR"] = "127.0.0.1"  # this process's environment only
    os.environ["MASTER_PORT"] = str(port)
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        results = _train(rank, args, lmdb_path, test_set)
        with open(os.path.join(out_dir, f"rank{rank}.json"), "w") as fh:
            json.dump(results, fh)
    finally:
        dist.destroy_process_group()


def _train(rank: int, args: argparse.Namespace, lmdb_path: str,
           test_set: tuple) -> Dict[str, Any]:
    lmdb_source = il.LMDBSource(lmdb_path)
    source = (lmdb_source if args.storage == "local"
              else il.ThrottledSource(lmdb_source, profile=args.storage))
    record_bytes = len(lmdb_source.read_many([0])[0])
    cache_bytes = int(args.cache_fraction * len(lmdb_source) * record_bytes)
    dataset = il.ImpactDataset(source, transform=_to_xy, cache_bytes=cache_bytes,
                               substitution=not args.exactly_once)
    options = {} if args.warmup_epochs is None else {"warmup_epochs": args.warmup_epochs}
    # rank / num_replicas come from torch.distributed; the seed must be the same on
    # every rank, since every rank computes the same global plan from it.
    loader = il.ImpactLoader(dataset, batch_size=args.batch_size, seed=args.seed,
                             num_workers=args.workers, sampler_options=options)
    sampler = loader.sampler

    torch.manual_seed(args.seed)  # same initial weights everywhere (DDP also broadcasts)
    net = torch.nn.Sequential(torch.nn.Linear(64, 128), torch.nn.ReLU(),
                              torch.nn.Linear(128, 10))
    model = DistributedDataParallel(net)
    opt = torch.optim.Adam(model.parameters(), lr=args.lr)
    x_test, y_test = test_set
    x_test_t, y_test_t = torch.from_numpy(x_test) / 16.0, torch.from_numpy(y_test)

    shares: List[List[int]] = []
    delivered: List[List[int]] = []
    selected: List[int] = []
    accuracy: List[float] = []
    try:
        for epoch in range(args.epochs):
            start = time.perf_counter()
            before = sampler.stats()["samples_selected"]
            loader.set_epoch(epoch)            # a collective: merges every rank's losses
            shares.append(sampler.epoch_plan()[0].tolist())
            got: List[int] = []
            for (x, y), idx in loader:
                losses = F.cross_entropy(model(x), y, reduction="none")
                (losses * sampler.weights(idx)).mean().backward()  # DDP averages grads
                opt.step()
                opt.zero_grad()
                loader.update(idx, losses.detach())
                got.extend(idx.tolist())
            delivered.append(got)
            selected.append(sampler.stats()["samples_selected"] - before)
            with torch.no_grad():  # the wrapped module: evaluation is not a collective
                acc = (net(x_test_t).argmax(1) == y_test_t).float().mean().item()
            accuracy.append(acc)
            if rank == 0:
                print(f"epoch {epoch:2d}: {selected[-1]} samples selected, "
                      f"{len(got)} trained on rank 0 in "
                      f"{time.perf_counter() - start:.2f} s, test accuracy {acc:.3f}",
                      flush=True)
        stats = loader.stats()
    finally:
        dataset.close()
        lmdb_source.close()
    return {"rank": sampler.rank, "world_size": sampler.num_replicas, "shares": shares,
            "delivered": delivered, "selected": selected, "accuracy": accuracy,
            "hits": stats.get("hits", 0), "substitutions": stats.get("substitutions", 0),
            "syncs": stats["syncs"]}


def _parse(argv: Optional[List[str]]) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--world-size", type=int, default=2,
                    help="number of ranks (processes), >= 1. Default 2")
    ap.add_argument("--storage", default="nfs", choices=STORAGE,
                    help="emulated storage profile each rank reads through ('local': "
                         "no added latency). Default nfs")
    ap.add_argument("--epochs", type=int, default=None,
                    help="training epochs (default 10; 3 with --fast)")
    ap.add_argument("--batch-size", type=int, default=32,
                    help="samples per batch on each rank (global batch = this x ranks)")
    ap.add_argument("--workers", type=int, default=0,
                    help="DataLoader worker processes per rank (0: read in the rank)")
    ap.add_argument("--cache-fraction", type=float, default=0.5,
                    help="each rank's cache size as a share of the training set's "
                         "bytes, in [0, 1]. Default 0.5")
    ap.add_argument("--exactly-once", action="store_true",
                    help="turn cache substitution off: every rank delivers exactly its "
                         "planned share")
    ap.add_argument("--warmup-epochs", type=int, default=None,
                    help="epochs over the full data before importance selection "
                         "(default: the library's, 1 with --fast)")
    ap.add_argument("--lr", type=float, default=3e-3, help="Adam learning rate")
    ap.add_argument("--test-fraction", type=float, default=0.2,
                    help="share of the digits held out for testing, in (0, 1)")
    ap.add_argument("--start-method", default="spawn",
                    choices=("spawn", "forkserver", "fork"),
                    help="how rank processes start. Default spawn (fresh interpreters: "
                         "safe with threads and CUDA); fork starts faster on Linux")
    ap.add_argument("--seed", type=int, default=0,
                    help="seed of the split, model and plans")
    ap.add_argument("--fast", action="store_true",
                    help="short run for tests: 3 epochs, 1 warm-up epoch")
    args = ap.parse_args(argv)
    if args.epochs is None:
        args.epochs = 3 if args.fast else 10
    if args.warmup_epochs is None and args.fast:
        args.warmup_epochs = 1
    if args.world_size < 1:
        ap.error(f"--world-size {args.world_size} must be >= 1 process")
    if args.epochs < 1:
        ap.error(f"--epochs {args.epochs} must be >= 1")
    if not 0.0 <= args.cache_fraction <= 1.0:
        ap.error(f"--cache-fraction {args.cache_fraction} must be in [0, 1]")
    if not 0.0 < args.test_fraction < 1.0:
        ap.error(f"--test-fraction {args.test_fraction} must be in (0, 1), e.g. 0.2")
    return args


def main(argv: Optional[List[str]] = None) -> Dict[str, Any]:
    """Write the data, spawn the ranks, and return every rank's results.

    Returns:
        ``{"ranks": [per-rank dict, ...], "test_accuracy": rank 0's final accuracy,
        "train_samples": N}``; a rank's dict holds, per epoch, its planned share
        (``shares``), the indices it delivered (``delivered``, differing from the share
        only where the cache substituted a sample), the size of the global selection
        (``selected``) and the test accuracy.
    """
    args = _parse(argv)
    with tempfile.TemporaryDirectory(prefix="impact-ddp-") as tmp:
        x_train, y_train, x_test, y_test = digits_split(args.test_fraction, args.seed)
        path = os.path.join(tmp, "digits-train.lmdb")
        il.write_lmdb(path, ({"x": x, "label": int(y)} for x, y in zip(x_train, y_train)))
        port = free_port()
        print(f"{args.world_size} ranks on gloo, rendezvous at 127.0.0.1:{port}, "
              f"{len(x_train)} training samples", flush=True)
        mp.start_processes(train_rank, nprocs=args.world_size, join=True,
                           args=(args.world_size, port, args, path, (x_test, y_test), tmp),
                           start_method=args.start_method)
        ranks = []
        for r in range(args.world_size):
            with open(os.path.join(tmp, f"rank{r}.json")) as fh:
                ranks.append(json.load(fh))
    for e in range(args.epochs):
        planned = set().union(*(r["shares"][e] for r in ranks))
        delivered = set().union(*(r["delivered"][e] for r in ranks))
        print(f"epoch {e:2d}: planned shares of {[len(r['shares'][e]) for r in ranks]} "
              f"samples cover {len(planned)} distinct of {ranks[0]['selected'][e]} "
              f"selected; delivered {len(delivered)} distinct")
    print(f"cache substitutions per rank: {[r['substitutions'] for r in ranks]}; "
          f"final test accuracy {ranks[0]['accuracy'][-1]:.3f}")
    return {"ranks": ranks, "test_accuracy": ranks[0]["accuracy"][-1],
            "train_samples": len(x_train)}


if __name__ == "__main__":
    main()
    sys.exit(0)
