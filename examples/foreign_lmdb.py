"""Train from an LMDB that another tool wrote: ASCII keys, raw bytes, a ``__len__`` entry.

Many image pipelines store a dataset in LMDB their own way. This script first plays
"the other tool" and writes such a database with the plain ``lmdb`` package:

* keys are zero-padded decimal text: ``b"00000000"``, ``b"00000001"``, ...;
* each value is an 8-byte little-endian header (height uint16, width uint16,
  label uint32) followed by the height x width pixels as raw uint8, row by row;
* one extra entry ``b"__len__"`` holds the number of samples as ASCII digits.

It then opens that database with impact-loader without converting it, through three
hooks of ``LMDBSource``: ``key_fn=AsciiKeys(8)`` (index -> key), ``decode_fn`` (value ->
sample dict) and ``length_key=b"__len__"`` (otherwise the extra entry would count as a
sample). The samples are scikit-learn's bundled digits (nothing is downloaded). While it
trains, it checks every delivered sample against the image and label written under the
key of the index the loader reported.

    python examples/foreign_lmdb.py                 # 5 epochs over the 1797 digits
    python examples/foreign_lmdb.py --data /tmp/x   # keep the LMDB in /tmp/x
    python examples/foreign_lmdb.py --fast          # short run (used by the tests)
"""

from __future__ import annotations

import argparse
import os
import struct
import sys
import tempfile
import time
from typing import Any, Dict, List, Optional

import lmdb
import numpy as np
import torch
import torch.nn.functional as F

import impact_loader as il

HEADER = struct.Struct("<HHI")  # height, width, label: the other tool's record header
KEY_DIGITS = 8
LENGTH_KEY = b"__len__"


def write_like_another_tool(path: str, images: np.ndarray, labels: np.ndarray) -> None:
    """Write ``images`` (uint8, n x h x w) and ``labels`` the way the other tool does."""
    env = lmdb.open(path, map_size=1 << 26, subdir=True)
    try:
        with env.begin(write=True) as txn:
            for i, (image, label) in enumerate(zip(images, labels)):
                h, w = image.shape
                txn.put(b"%0*d" % (KEY_DIGITS, i),
                        HEADER.pack(h, w, int(label)) + image.tobytes())
            txn.put(LENGTH_KEY, str(len(images)).encode("ascii"))
    finally:
        env.close()


def decode_record(raw: Any) -> Dict[str, Any]:
    """``decode_fn`` for LMDBSource: one stored value -> ``{"image", "label"}``.

    Module level so it pickles to DataLoader workers under any start method.
    ``raw`` is bytes or a bytearray (the cache hands over writable buffers).
    """
    h, w, label = HEADER.unpack_from(raw, 0)
    image = np.frombuffer(raw, dtype=np.uint8, count=h * w, offset=HEADER.size)
    return {"image": image.reshape(h, w), "label": label}


def _to_xy(sample: Dict[str, Any]):
    """Runs in the workers: the raw uint8 image as a tensor (kept exact), the label."""
    return torch.from_numpy(sample["image"]), sample["label"]


def _parse(argv: Optional[List[str]]) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--samples", type=int, default=None,
                    help="digits written to the LMDB, 1..1797 (default 1797; 600 with "
                         "--fast)")
    ap.add_argument("--epochs", type=int, default=None,
                    help="training epochs (default 5; 3 with --fast)")
    ap.add_argument("--batch-size", type=int, default=32, help="samples per batch")
    ap.add_argument("--workers", type=int, default=2,
                    help="DataLoader worker processes (0 reads in the main process)")
    ap.add_argument("--cache-fraction", type=float, default=0.5,
                    help="shared cache size as a share of the database's sample bytes, "
                         "in [0, 1]. Default 0.5")
    ap.add_argument("--data", default=None,
                    help="directory for the LMDB (kept afterwards; default: a temporary "
                         "directory removed at the end)")
    ap.add_argument("--seed", type=int, default=0, help="seed of the model and the plans")
    ap.add_argument("--fast", action="store_true",
                    help="short run for tests: 600 samples, 3 epochs (1 warm-up)")
    args = ap.parse_args(argv)
    if args.samples is None:
        args.samples = 600 if args.fast else 1797
    if args.epochs is None:
        args.epochs = 3 if args.fast else 5
    if not 1 <= args.samples <= 1797:
        ap.error(f"--samples {args.samples} must be in [1, 1797] (the digits data set)")
    if args.epochs < 1:
        ap.error(f"--epochs {args.epochs} must be >= 1")
    if not 0.0 <= args.cache_fraction <= 1.0:
        ap.error(f"--cache-fraction {args.cache_fraction} must be in [0, 1]")
    return args


def run(args: argparse.Namespace, data_dir: str) -> Dict[str, Any]:
    """Write the foreign LMDB under ``data_dir``, train from it, return the results."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    images = digits.images[:args.samples].astype(np.uint8)  # 8 x 8, values 0..16
    labels = digits.target[:args.samples].astype(np.int64)
    path = os.path.join(data_dir, "foreign.lmdb")
    write_like_another_tool(path, images, labels)

    source = il.LMDBSource(path, key_fn=il.AsciiKeys(KEY_DIGITS), decode_fn=decode_record,
                           length_key=LENGTH_KEY)
    print(f"opened {source!r}: {len(source)} samples (the database holds "
          f"{len(images) + 1} entries, one of them {LENGTH_KEY!r})", flush=True)
    record_bytes = HEADER.size + images[0].size
    dataset = il.ImpactDataset(source, transform=_to_xy,
                               cache_bytes=int(args.cache_fraction * len(source)
                                               * record_bytes))
    loader = il.ImpactLoader(dataset, batch_size=args.batch_size, seed=args.seed,
                             num_workers=args.workers, sampler_options={"warmup_epochs": 1})
    torch.manual_seed(args.seed)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 64),
                                torch.nn.ReLU(), torch.nn.Linear(64, 10))
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    want_images, want_labels = torch.from_numpy(images), torch.from_numpy(labels)
    delivered = mismatches = 0
    seen = set()
    accuracy: List[float] = []
    try:
        for epoch in range(args.epochs):
            start = time.perf_counter()
            loader.set_epoch(epoch)
            correct = count = 0
            for (x, y), idx in loader:
                # The check: what arrived is what the other tool wrote under that index.
                same = ((x == want_images[idx]).flatten(1).all(1) & (y == want_labels[idx]))
                mismatches += int((~same).sum())
                delivered += len(idx)
                seen.update(idx.tolist())
                logits = model(x.float() / 16.0)
                losses = F.cross_entropy(logits, y, reduction="none")
                (losses * loader.sampler.weights(idx)).mean().backward()
                opt.step()
                opt.zero_grad()
                loader.update(idx, losses.detach())
                correct += int((logits.argmax(1) == y).sum())
                count += len(idx)
            accuracy.append(correct / count)
            print(f"epoch {epoch}: {count} samples in {time.perf_counter() - start:.2f} s, "
                  f"training accuracy {accuracy[-1]:.3f}", flush=True)
        stats = loader.stats()
    finally:
        dataset.close()
        source.close()
    print(f"checked {delivered} delivered samples ({len(seen)} distinct) against the "
          f"written bytes: {mismatches} mismatches; cache hits {stats.get('hits', 0)}, "
          f"substitutions {stats.get('substitutions', 0)}")
    return {"length": len(source), "samples": len(images), "delivered": delivered,
            "distinct": len(seen), "mismatches": mismatches,
            "train_accuracy": accuracy, "hits": stats.get("hits", 0),
            "substitutions": stats.get("substitutions", 0)}


def main(argv: Optional[List[str]] = None) -> Dict[str, Any]:
    """Parse ``argv`` (default ``sys.argv[1:]``), run, return the results dict."""
    args = _parse(argv)
    if args.data is not None:
        os.makedirs(args.data, exist_ok=True)
        return run(args, args.data)
    with tempfile.TemporaryDirectory(prefix="impact-foreign-") as tmp:
        return run(args, tmp)


if __name__ == "__main__":
    result = main()
    sys.exit(1 if result["mismatches"] else 0)
