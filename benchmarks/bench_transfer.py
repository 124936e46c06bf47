"""Receiving batches from DataLoader workers: shared-memory tensors against in-line bytes.

Side by side in one run, for each batch size in bytes: a stock ``DataLoader`` (every
tensor through its own shared-memory segment and a file descriptor passed over a
socket) and the same loader with ``collate_fn=InlineCollate(max_bytes=...)`` (tensors
pickled into the batch's message). The dataset returns ready-made tensors, so the
figures are the transfer, not the data: the training process's CPU per batch and the
wall time per batch, and their ratio (shared memory / in line). ::

    python benchmarks/bench_transfer.py
    python benchmarks/bench_transfer.py --features 64,2048,8192 --batches 300
"""

from __future__ import annotations

import argparse
import time
from typing import List, Optional

import torch
from torch.utils.data import DataLoader, Dataset

from impact_loader.collate import InlineCollate


class _Ready(Dataset):
    """Item i: ``((features float32, label), i)``, the shape ImpactDataset batches have."""

    def __init__(self, features: int) -> None:
        self.x = torch.zeros(features)

    def __len__(self) -> int:
        return 1 << 30

    def __getitem__(self, i: int) -> tuple:
        return (self.x, i % 10), i


def _measure(features: int, inline: bool, batch_size: int, batches: int,
             workers: int) -> tuple:
    collate = InlineCollate(max_bytes=1 << 40) if inline else None
    loader = DataLoader(_Ready(features), batch_size=batch_size, num_workers=workers,
                        collate_fn=collate, persistent_workers=True)
    it = iter(loader)
    for _ in range(20):  # warm-up: workers started, queues primed
        next(it)
    cpu, wall = time.thread_time(), time.perf_counter()
    for _ in range(batches):
        next(it)
    cpu, wall = time.thread_time() - cpu, time.perf_counter() - wall
    del it, loader
    return cpu / batches, wall / batches


def main(argv: Optional[List[str]] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--features", default="64,512,2048,8192",
                    help="float32 features per sample, comma-separated (default: "
                         "64,512,2048,8192)")
    ap.add_argument("--batch-size", type=int, default=128, help="samples per batch")
    ap.add_argument("--batches", type=int, default=300, help="batches measured per case")
    ap.add_argument("--workers", type=int, default=2, help="DataLoader workers")
    args = ap.parse_args(argv)
    sizes = [int(f) for f in args.features.split(",")]
    print(f"batch {args.batch_size}, {args.workers} workers, {args.batches} batches; "
          "training-process CPU and wall time per batch")
    print(f"{'features KiB':>12} | {'shm cpu us':>10} | {'inline cpu us':>13} | "
          f"{'cpu ratio':>9} | {'shm wall us':>11} | {'inline wall us':>14} | wall ratio")
    for f in sizes:
        shm = _measure(f, False, args.batch_size, args.batches, args.workers)
        inl = _measure(f, True, args.batch_size, args.batches, args.workers)
        kib = f * 4 * args.batch_size / 1024
        print(f"{kib:>12.0f} | {shm[0] * 1e6:>10.0f} | {inl[0] * 1e6:>13.0f} | "
              f"{shm[0] / inl[0]:>9.2f} | {shm[1] * 1e6:>11.0f} | {inl[1] * 1e6:>14.0f} | "
              f"{shm[1] / inl[1]:.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
