"""The reference I/O-bound scenario of the end-to-end issue, at full size.

A thin scenario definition over ``impact-bench`` (the engine is
:mod:`impact_loader.bench`): N = 20,000 records of 8 KiB in an LMDB, emulated network
file system (4 ms per request, 100 MB/s, 8 requests in flight), cache 20% of the data,
batch 128, 2 workers, a small MLP plus 10 ms per step; median of epochs 2-6 (the first
is warm-up) of plain DataLoader, uniform + LRU, uniform + MinIO and impact-loader's
defaults, side by side. ``--easy`` adds the not-I/O-bound case (warm local LMDB, no
throttle, cache holds everything); ``--quick`` is a smoke run on small data.

    python benchmarks/reference.py --json ref.json        # ~15 minutes on 2 cores
    python benchmarks/reference.py --easy --json easy.json
    python benchmarks/reference.py --latency-ms 1         # the data-wait check
Any other ``impact-bench`` option may follow and overrides these defaults.
"""

from __future__ import annotations

import sys
from typing import List, Optional

from impact_loader.bench.cli import main as bench

REFERENCE = ["--samples", "20000", "--record-bytes", "8192", "--epochs", "6",
             "--warmup", "1", "--test-samples", "2000", "--storage", "nfs",
             "--cache-fraction", "0.2", "--batch-size", "128", "--workers", "2",
             "--compute-ms", "10", "--loaders", "plain,lru,minio,impact"]
QUICK = ["--samples", "1024", "--epochs", "3", "--test-samples", "200",
         "--latency-ms", "1"]
EASY = ["--storage", "local", "--cache-fraction", "1.05"]


def main(argv: Optional[List[str]] = None) -> int:
    """Run the reference (and with ``--easy`` the easy) scenario; returns the exit code."""
    args = list(sys.argv[1:] if argv is None else argv)
    easy = "--easy" in args
    quick = "--quick" in args
    args = [a for a in args if a not in ("--easy", "--quick")]
    base = REFERENCE + (QUICK if quick else [])
    easy_base = [a for a in base]
    if quick:  # the quick latency is an emulation figure; the easy case reads locally
        i = easy_base.index("--latency-ms")
        del easy_base[i:i + 2]
    code = bench(base + args)  # later options win in argparse
    if code or not easy:
        return code
    for option in ("--latency-ms", "--bandwidth-mb-s", "--inflight"):  # emulation only
        while option in args:
            i = args.index(option)
            del args[i:i + 2]
    if "--json" in args:  # keep the reference's JSON; the easy case gets its own
        i = args.index("--json") + 1
        args[i] = args[i].replace(".json", "") + "-easy.json"
    if "--plot" in args:
        i = args.index("--plot") + 1
        args[i] = args[i].replace(".png", "") + "-easy.png"
    return bench(easy_base + args + EASY)


if __name__ == "__main__":
    sys.exit(main())
