"""Storage-layer benchmark: warm random reads, decode rate, cold sequential vs random.

Run:  python benchmarks/bench_sources.py            (about a minute)
      python benchmarks/bench_sources.py --records 50000 --cold-mib 512

Every phase separates setup (writing the data), warm-up and measurement, and reports
records/s plus the LMDB/Arrow ratio measured in the same run.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time

import numpy as np

import impact_loader as il


def _records(n: int, size: int):
    rng = np.random.default_rng(0)
    for i in range(n):
        yield {"payload": rng.integers(0, 256, size - 120, dtype=np.uint8), "index": i}


def _rate(fn, items: int, repeats: int) -> float:
    """Median items/s over ``repeats`` timed runs of ``fn`` (after one warm-up run)."""
    fn()
    rates = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        rates.append(items / (time.perf_counter() - start))
    return statistics.median(rates)


def warm_random(tmp: str, n: int, size: int, batch: int, repeats: int) -> dict:
    lmdb_src = il.write_lmdb(os.path.join(tmp, "w.lmdb"), _records(n, size))
    arrow_src = il.write_arrow(os.path.join(tmp, "w.arrow"), _records(n, size),
                               rows_per_shard=4096)
    idx = np.random.default_rng(1).integers(0, n, size=(max(1, 100_000 // batch), batch))

    def reader(src):
        def run():
            for b in idx:
                src.read_many(b)
        return run

    out = {name: _rate(reader(src), idx.size, repeats)
           for name, src in (("lmdb", lmdb_src), ("arrow", arrow_src))}
    out["record_bytes"] = len(lmdb_src.read_many([0])[0])
    return out


def decode_rate(repeats: int) -> float:
    raw = il.encode({"x": np.random.rand(64).astype(np.float32), "label": 7})
    n = 100_000

    def run():
        for _ in range(n):
            il.decode(raw)

    return _rate(run, n, repeats)


def cold_reads(tmp: str, mib: int, size: int, batch: int) -> dict:
    n = mib * 2**20 // size
    src = il.write_lmdb(os.path.join(tmp, "c.lmdb"), _records(n, size))
    out = {"records": n, "mib": mib}
    order = {"sequential": np.arange(n),
             "random": np.random.default_rng(2).permutation(n)}
    for name, seq in order.items():
        il.evict_page_cache(src)
        resident = il.resident_bytes(src.files()[0])
        start = time.perf_counter()
        for a in range(0, n, batch):
            src.read_many(seq[a:a + batch])
        secs = time.perf_counter() - start
        out[name] = n / secs
        out[f"{name}_resident_before"] = resident
    out["file_bytes"] = os.path.getsize(src.files()[0])
    # The device's own sequential rate, for reference: LMDB maps its file with
    # readahead off, so even a contiguous scan faults one 4 KiB page at a time.
    il.evict_page_cache(src)
    start = time.perf_counter()
    with open(src.files()[0], "rb", buffering=0) as fh:
        while fh.read(1 << 20):
            pass
    out["file_sequential_mb_s"] = out["file_bytes"] / (time.perf_counter() - start) / 1e6
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--records", type=int, default=20_000, help="warm-read records")
    p.add_argument("--record-bytes", type=int, default=4096, help="record size, bytes")
    p.add_argument("--batch", type=int, default=256, help="indices per read_many call")
    p.add_argument("--repeats", type=int, default=5, help="timed repetitions")
    p.add_argument("--cold-mib", type=int, default=256, help="cold-read file size, MiB")
    args = p.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-sources-", dir=".") as tmp:
        w = warm_random(tmp, args.records, args.record_bytes, args.batch, args.repeats)
        print(f"warm random read_many ({w['record_bytes']} B records, batches of "
              f"{args.batch}, one thread):")
        print(f"  lmdb  {w['lmdb']:>12,.0f} records/s")
        print(f"  arrow {w['arrow']:>12,.0f} records/s   (arrow/lmdb = "
              f"{w['arrow'] / w['lmdb']:.2f})")
        d = decode_rate(args.repeats)
        print(f"decode of a 64-float + int record: {d:,.0f} records/s")
        c = cold_reads(tmp, args.cold_mib, args.record_bytes, args.batch)
        print(f"cold LMDB reads after posix_fadvise(DONTNEED), {c['mib']} MiB, "
              f"{c['records']} records (resident before: sequential "
              f"{c['sequential_resident_before'] >> 20} MiB, random "
              f"{c['random_resident_before'] >> 20} MiB):")
        for k in ("sequential", "random"):
            print(f"  {k:<10} {c[k]:>12,.0f} records/s  "
                  f"({c[k] * args.record_bytes / 1e6:,.0f} MB/s)")
        print(f"  sequential/random = {c['sequential'] / c['random']:.2f}")
        print(f"  plain sequential read of the same file in 1 MiB chunks: "
              f"{c['file_sequential_mb_s']:,.0f} MB/s")


if __name__ == "__main__":
    main()
