"""``impact-loader``: convert data to LMDB/Arrow, inspect a dataset, run a short demo."""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from typing import Any, Dict, List, Optional, Sequence

import numpy as np

from .errors import ImpactLoaderError

__all__ = ["main", "inspect_dataset"]


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"{value} must be > 0")
    return value


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="impact-loader",
        description="Prepare and inspect datasets for impact-loader.")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    c = sub.add_parser(
        "convert", help="convert .npy/.npz, a class-folder tree, or an Arrow/Parquet "
        "table to an LMDB or Arrow dataset",
        description="Convert INPUT to an impact-loader dataset at OUTPUT. INPUT may be "
        "a .npy array (sample i = {'x': a[i]}), a .npz of arrays sharing their first "
        "dimension, a folder with one sub-folder of files per class (sample = {'data': "
        "bytes, 'label': int, 'path': str}), or an Arrow/Parquet table (one sample per "
        "row).")
    c.add_argument("input", help="the data to convert")
    c.add_argument("output", help="the dataset to write (a directory)")
    c.add_argument("--format", choices=("lmdb", "arrow"), default="lmdb",
                   help="output format (default: lmdb)")
    c.add_argument("--rows-per-shard", type=_positive, default=10_000, metavar="N",
                   help="Arrow only: samples per shard file (default: 10000)")
    c.add_argument("--overwrite", action="store_true",
                   help="replace OUTPUT if it exists")
    c.add_argument("--quiet", action="store_true", help="no progress bar")

    i = sub.add_parser("inspect", help="describe a dataset: format, count, sizes, fields",
                       description="Describe the LMDB or Arrow dataset at PATH.")
    i.add_argument("path", help="LMDB directory/file or Arrow shard(s)")
    i.add_argument("--sample", type=_positive, default=2000, metavar="N",
                   help="records read to measure sizes (default: 2000)")
    i.add_argument("--json", action="store_true", help="print JSON instead of text")

    d = sub.add_parser("demo", help="write a synthetic dataset and read it back, local "
                       "and through emulated network storage",
                       description="Write N synthetic samples to LMDB and Arrow in a "
                       "temporary directory, read them back in random batches, and "
                       "print read rates, directly and through the 'nfs' profile.")
    d.add_argument("--samples", type=_positive, default=5000, metavar="N",
                   help="number of samples (default: 5000)")
    d.add_argument("--record-kib", type=_positive, default=8, metavar="KIB",
                   help="approximate record size in KiB (default: 8)")
    return p


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Entry point of the ``impact-loader`` console script; returns the exit code."""
    args = _parser().parse_args(argv)
    try:
        if args.command == "convert":
            return _convert(args)
        if args.command == "inspect":
            info = inspect_dataset(args.path, sample=args.sample)
            print(json.dumps(info, indent=2) if args.json else _format_info(info))
            return 0
        return _demo(args)
    except (ImpactLoaderError, FileNotFoundError, IndexError) as exc:
        print(f"impact-loader {args.command}: error: {exc}", file=sys.stderr)
        return 2


def _convert(args: argparse.Namespace) -> int:
    from tqdm.auto import tqdm

    from .convert import open_input
    from .lmdb_source import write_lmdb

    total, samples = open_input(args.input)
    bar = tqdm(samples, total=total, desc=f"converting to {args.format}", unit="sample",
               disable=args.quiet, dynamic_ncols=True)
    if args.format == "lmdb":
        src = write_lmdb(args.output, bar, overwrite=args.overwrite)
    else:
        from .arrow_source import write_arrow
        src = write_arrow(args.output, bar, rows_per_shard=args.rows_per_shard,
                          overwrite=args.overwrite)
    print(f"wrote {len(src)} samples to {args.output} ({args.format})")
    return 0


def inspect_dataset(path: str, *, sample: int = 2000) -> Dict[str, Any]:
    """Describe a dataset: format, count, bytes on disk, record sizes, fields.

    Args:
        path: an LMDB or Arrow dataset.
        sample: number of records (evenly spread) read to measure sizes.

    Raises:
        DatasetNotFoundError / NotADatasetError: as :func:`open_source`.
    """
    from .detect import detect_format, open_source
    from .pagecache import source_files

    fmt = detect_format(path)
    src = open_source(path)
    n = len(src)
    files = source_files(src)
    info: Dict[str, Any] = {"path": path, "format": fmt, "samples": n,
                            "files": len(files),
                            "bytes_on_disk": sum(os.path.getsize(f) for f in files)}
    if n:
        idx = np.unique(np.linspace(0, n - 1, num=min(n, sample)).astype(np.int64))
        raws = src.read_many(idx)
        sizes = np.array([len(r) for r in raws])
        info["record_bytes"] = {"min": int(sizes.min()), "mean": float(sizes.mean()),
                                "median": float(np.median(sizes)),
                                "max": int(sizes.max()), "measured": int(len(sizes))}
        first = src.decode(raws[0])
        info["fields"] = {k: _describe(v) for k, v in first.items()} \
            if isinstance(first, dict) else {"(value)": _describe(first)}
    close = getattr(src, "close", None)
    if close:
        close()
    return info


def _describe(value: Any) -> str:
    if isinstance(value, np.ndarray):
        return f"array {value.dtype} shape {list(value.shape)}"
    if isinstance(value, (bytes, str)):
        return f"{type(value).__name__} (first record: {len(value)} long)"
    return type(value).__name__


def _format_info(info: Dict[str, Any]) -> str:
    lines = [f"path:          {info['path']}",
             f"format:        {info['format']} ({info['files']} file(s), "
             f"{info['bytes_on_disk'] / 2**20:.1f} MiB on disk)",
             f"samples:       {info['samples']}"]
    if "record_bytes" in info:
        rb = info["record_bytes"]
        lines.append(f"record bytes:  min {rb['min']}, median {rb['median']:.0f}, mean "
                     f"{rb['mean']:.0f}, max {rb['max']} (over {rb['measured']} records)")
        lines.append("fields:")
        width = max(len(k) for k in info["fields"])
        lines.extend(f"  {k:<{width}}  {v}" for k, v in info["fields"].items())
    return "\n".join(lines)


def _demo(args: argparse.Namespace) -> int:
    from .arrow_source import write_arrow
    from .lmdb_source import write_lmdb
    from .synthetic import synthetic_samples
    from .throttle import ThrottledSource

    n, size = args.samples, args.record_kib * 1024
    rows: List[List[str]] = []
    with tempfile.TemporaryDirectory(prefix="impact-demo-") as tmp:
        print(f"writing {n} synthetic samples of ~{args.record_kib} KiB to {tmp}")
        sources = {
            "lmdb": write_lmdb(os.path.join(tmp, "demo.lmdb"),
                               synthetic_samples(n, record_bytes=size), progress=True),
            "arrow": write_arrow(os.path.join(tmp, "demo.arrow"),
                                 synthetic_samples(n, record_bytes=size),
                                 rows_per_shard=2048),
        }
        rng = np.random.default_rng(1)
        for name, src in sources.items():
            for label, reader in ((name, src), (f"{name} via nfs profile",
                                                ThrottledSource(src, profile="nfs"))):
                batches = rng.integers(0, n, size=(8 if "nfs" in label else 200, 64))
                start = time.perf_counter()
                for b in batches:
                    for i, raw in zip(b, reader.read_many(b)):
                        if reader.decode(raw)["index"] != int(i):
                            raise RuntimeError(f"{label}: wrong sample for index {i}")
                secs = time.perf_counter() - start
                rows.append([label, f"{batches.size / secs:,.0f}",
                             f"{batches.size * size / secs / 1e6:,.1f}"])
            src.close()
    width = max(len(r[0]) for r in rows)
    print(f"\n{'source':<{width}}  {'samples/s':>10}  {'MB/s':>8}   (random batches of 64,"
          " every sample checked)")
    for r in rows:
        print(f"{r[0]:<{width}}  {r[1]:>10}  {r[2]:>8}")
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
