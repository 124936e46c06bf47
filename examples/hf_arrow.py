"""Train from HuggingFace-style Arrow stream files, without the ``datasets`` package.

``datasets.Dataset.save_to_disk`` (and the ``datasets`` cache) keeps a split as Arrow
IPC *stream* files named ``data-00000-of-0000N.arrow``, written in record batches of
1000 rows (``writer_batch_size``), with the feature description in the schema metadata
under ``b"huggingface"``. impact-loader's ``ArrowSource`` reads such files directly,
memory-mapped: no conversion, and ``datasets`` need not be installed.

This script writes scikit-learn's bundled digits (nothing is downloaded) in that layout,
as a ``DatasetDict`` with ``train`` and ``test`` splits:

* ``image``: ``Sequence(Sequence(Value("uint8"), length=8), length=8)``, stored as
  ``fixed_size_list<fixed_size_list<uint8, 8>, 8>``, read as a uint8 array of 8 x 8;
* ``label``: ``ClassLabel`` (int64);
* ``meta``: a struct ``{id: int64, source: string}``, read as the fields ``meta.id``
  and ``meta.source`` (struct children are flattened to ``parent.child``).

It then trains with ``ArrowSource("<dir>/train/data-*.arrow")`` -> ``ImpactDataset`` ->
``ImpactLoader``, evaluates on the test split each epoch, and checks every delivered
sample against the row written at the index the loader reported.

    python examples/hf_arrow.py                           # 10 epochs
    python examples/hf_arrow.py --data /tmp/digits-hf     # keep the files
    python examples/hf_arrow.py --fast                    # short run (used by the tests)
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import sys
import tempfile
import time
from typing import Any, Dict, List, Optional

import numpy as np
import pyarrow as pa
import torch
import torch.nn.functional as F

import impact_loader as il

SIDE = 8  # digits are 8 x 8 pixels
FEATURES = {  # what datasets records in the schema metadata and dataset_info.json
    "image": {"feature": {"feature": {"dtype": "uint8", "_type": "Value"},
                          "length": SIDE, "_type": "Sequence"},
              "length": SIDE, "_type": "Sequence"},
    "label": {"names": [str(d) for d in range(10)], "_type": "ClassLabel"},
    "meta": {"id": {"dtype": "int64", "_type": "Value"},
             "source": {"dtype": "string", "_type": "Value"}},
}
SCHEMA = pa.schema(
    [("image", pa.list_(pa.list_(pa.uint8(), SIDE), SIDE)),
     ("label", pa.int64()),
     ("meta", pa.struct([("id", pa.int64()), ("source", pa.string())]))],
    metadata={b"huggingface": json.dumps({"info": {"features": FEATURES}}).encode()})


def _record_batch(images: np.ndarray, labels: np.ndarray,
                  ids: np.ndarray) -> pa.RecordBatch:
    """One Arrow record batch of ``SCHEMA`` (row ``k`` gets ``meta.id = ids[k]``)."""
    flat = pa.array(images.reshape(-1), type=pa.uint8())
    rows = pa.FixedSizeListArray.from_arrays(flat, SIDE)
    image = pa.FixedSizeListArray.from_arrays(rows, SIDE)
    meta = pa.StructArray.from_arrays(
        [pa.array(ids, pa.int64()), pa.array(["sklearn-digits"] * len(ids))],
        names=["id", "source"])
    return pa.record_batch([image, pa.array(labels, pa.int64()), meta], schema=SCHEMA)


def write_hf_split(directory: str, images: np.ndarray, labels: np.ndarray, *,
                   shards: int, writer_batch_size: int) -> List[str]:
    """Write one split as ``datasets`` does: contiguous stream shards + state.json.

    Args:
        directory: the split's directory (created).
        images: uint8 array, rows x 8 x 8. labels: int64 array, one per row.
        shards: number of ``data-XXXXX-of-NNNNN.arrow`` files.
        writer_batch_size: rows per Arrow record batch (``datasets`` uses 1000).

    Returns:
        The shard paths, in row order.
    """
    os.makedirs(directory, exist_ok=True)
    for old in glob.glob(os.path.join(directory, "data-*.arrow")):
        os.remove(old)  # a previous run's shards, maybe another count
    bounds = np.linspace(0, len(images), shards + 1).astype(np.int64)
    paths = []
    for s in range(shards):
        path = os.path.join(directory, f"data-{s:05d}-of-{shards:05d}.arrow")
        with pa.OSFile(path, "wb") as sink, pa.ipc.new_stream(sink, SCHEMA) as writer:
            for lo in range(int(bounds[s]), int(bounds[s + 1]), writer_batch_size):
                hi = min(lo + writer_batch_size, int(bounds[s + 1]))
                writer.write_batch(_record_batch(images[lo:hi], labels[lo:hi],
                                                 np.arange(lo, hi)))
        paths.append(path)
    with open(os.path.join(directory, "state.json"), "w") as fh:
        json.dump({"_data_files": [{"filename": os.path.basename(p)} for p in paths],
                   "_format_type": None, "_split": os.path.basename(directory)}, fh)
    with open(os.path.join(directory, "dataset_info.json"), "w") as fh:
        json.dump({"features": FEATURES}, fh)
    return paths


def _to_xy(sample: Dict[str, Any]):
    """Runs in the workers: uint8 image (8 x 8) as a tensor, the label, the row id."""
    return torch.from_numpy(sample["image"]), sample["label"], sample["meta.id"]


def _parse(argv: Optional[List[str]]) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--epochs", type=int, default=None,
                    help="training epochs (default 10; 3 with --fast)")
    ap.add_argument("--shards", type=int, default=2,
                    help="Arrow files the train split is written as. Default 2")
    ap.add_argument("--writer-batch-size", type=int, default=1000,
                    help="rows per Arrow record batch (datasets' default: 1000)")
    ap.add_argument("--batch-size", type=int, default=64, help="samples per training batch")
    ap.add_argument("--workers", type=int, default=2,
                    help="DataLoader worker processes (0 reads in the main process)")
    ap.add_argument("--cache-fraction", type=float, default=0.5,
                    help="shared cache size as a share of the train split's record "
                         "bytes, in [0, 1]. Default 0.5")
    ap.add_argument("--storage", default="local", choices=tuple(il.PROFILES) + ("local",),
                    help="emulated storage profile to read through (default local: the "
                         "files as they are)")
    ap.add_argument("--data", default=None,
                    help="directory for the DatasetDict (kept afterwards; default: a "
                         "temporary directory removed at the end)")
    ap.add_argument("--seed", type=int, default=0,
                    help="seed of the split, model and plans")
    ap.add_argument("--fast", action="store_true",
                    help="short run for tests: 3 epochs (1 warm-up)")
    args = ap.parse_args(argv)
    if args.epochs is None:
        args.epochs = 3 if args.fast else 10
    for name in ("epochs", "shards", "writer_batch_size", "batch_size"):
        if getattr(args, name) < 1:
            ap.error(f"--{name.replace('_', '-')} {getattr(args, name)} must be >= 1")
    if not 0.0 <= args.cache_fraction <= 1.0:
        ap.error(f"--cache-fraction {args.cache_fraction} must be in [0, 1]")
    return args


def run(args: argparse.Namespace, root: str) -> Dict[str, Any]:
    """Write the DatasetDict under ``root``, train from it, return the results."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    order = np.random.default_rng(args.seed).permutation(len(digits.target))
    images = digits.images[order].astype(np.uint8)
    labels = digits.target[order].astype(np.int64)
    n_test = len(labels) // 5
    splits = {"train": (images[n_test:], labels[n_test:]),
              "test": (images[:n_test], labels[:n_test])}
    for split, (x, y) in splits.items():
        write_hf_split(os.path.join(root, split), x, y, shards=args.shards,
                       writer_batch_size=args.writer_batch_size)
    with open(os.path.join(root, "dataset_dict.json"), "w") as fh:
        json.dump({"splits": list(splits)}, fh)

    arrow = il.ArrowSource(os.path.join(root, "train", "data-*.arrow"))
    print(f"opened {arrow!r}; fields {sorted(arrow.decode(arrow.read_many([0])[0]))}",
          flush=True)
    source = arrow if args.storage == "local" else il.ThrottledSource(
        arrow, profile=args.storage)
    record_bytes = len(arrow.read_many([0])[0])
    dataset = il.ImpactDataset(source, transform=_to_xy, cache_bytes=int(
        args.cache_fraction * len(arrow) * record_bytes))
    loader = il.ImpactLoader(dataset, batch_size=args.batch_size, seed=args.seed,
                             num_workers=args.workers, sampler_options={"warmup_epochs": 1})

    test = il.ArrowSource(os.path.join(root, "test"))  # a directory works too
    rows = [test.decode(r) for r in test.read_many(range(len(test)))]
    x_test = torch.from_numpy(np.stack([r["image"] for r in rows])).float() / 16.0
    y_test = torch.tensor([r["label"] for r in rows])

    want_images = torch.from_numpy(splits["train"][0])
    want_labels = torch.from_numpy(splits["train"][1])
    torch.manual_seed(args.seed)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(SIDE * SIDE, 128),
                                torch.nn.ReLU(), torch.nn.Linear(128, 10))
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    delivered = mismatches = 0
    accuracy: List[float] = []
    try:
        for epoch in range(args.epochs):
            start = time.perf_counter()
            loader.set_epoch(epoch)
            for (x, y, row_id), idx in loader:
                # The check: the row delivered is the row written at the reported index.
                same = ((x == want_images[idx]).flatten(1).all(1)
                        & (y == want_labels[idx]) & (row_id == idx))
                mismatches += int((~same).sum())
                delivered += len(idx)
                losses = F.cross_entropy(model(x.float() / 16.0), y, reduction="none")
                (losses * loader.sampler.weights(idx)).mean().backward()
                opt.step()
                opt.zero_grad()
                loader.update(idx, losses.detach())
            with torch.no_grad():
                accuracy.append((model(x_test).argmax(1) == y_test).float().mean().item())
            print(f"epoch {epoch}: {len(loader.data_wait)} batches in "
                  f"{time.perf_counter() - start:.2f} s, test accuracy {accuracy[-1]:.3f}",
                  flush=True)
        stats = loader.stats()
    finally:
        dataset.close()
        arrow.close()
        test.close()
    print(f"checked {delivered} delivered samples against the rows written: "
          f"{mismatches} mismatches; cache hits {stats.get('hits', 0)}, substitutions "
          f"{stats.get('substitutions', 0)}")
    return {"train_rows": len(arrow), "test_rows": len(test), "files": arrow.files(),
            "delivered": delivered, "mismatches": mismatches, "test_accuracy": accuracy[-1],
            "accuracy_per_epoch": accuracy, "hits": stats.get("hits", 0),
            "substitutions": stats.get("substitutions", 0)}


def main(argv: Optional[List[str]] = None) -> Dict[str, Any]:
    """Parse ``argv`` (default ``sys.argv[1:]``), run, return the results dict."""
    args = _parse(argv)
    if args.data is not None:
        os.makedirs(args.data, exist_ok=True)
        return run(args, args.data)
    with tempfile.TemporaryDirectory(prefix="impact-hf-") as tmp:
        return run(args, tmp)


if __name__ == "__main__":
    result = main()
    sys.exit(1 if result["mismatches"] else 0)
