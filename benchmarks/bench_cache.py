"""Benchmark of impact_loader.cache: worker reads, bookkeeping, memory.

Standalone script; every section separates setup, warm-up and measurement, and the
policies run side by side in the same process::

    python benchmarks/bench_cache.py                 # all sections, default sizes
    python benchmarks/bench_cache.py --section reads --record-bytes 16384 --workers 2

Sections:
    reads    -- a worker process (spawn by default) reads cached records of
                ``--record-bytes`` through ``SharedStore.read``: reads/s per process.
    bookkeep -- main-process cost per planned sample of annotate + fill + release for
                each policy, with tiny records so that copying bytes does not count
                (``--bk-record-bytes`` / ``--bk-block-bytes`` for other layouts).
    memory   -- shared region size versus cache_bytes, and the metadata bytes per
                cached entry after filling the cache with ``--record-bytes``
                records, with records of one block and of four blocks.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import time

import numpy as np

from impact_loader.cache import CacheConfig, CacheDirectory, SharedStore
from impact_loader.cache.codes import LOC_H, TIER_H, TIER_L


def _reader(store, items, warmup, n, out):
    slots = [s for s, _ in items]
    gens = [g for _, g in items]
    k = len(slots)
    read = store.read
    for i in range(warmup):  # warm-up: page in the mapping, settle caches
        read(slots[i % k], gens[i % k])
    misses = 0
    t0 = time.perf_counter()
    for i in range(n):
        if read(slots[i % k], gens[i % k]) is None:
            misses += 1
    out.put((time.perf_counter() - t0, misses))


def bench_reads(args):
    rec = args.record_bytes
    n_rec = max(1, args.cache_mib * (1 << 20) // rec)
    # setup
    block = args.block_bytes or rec
    store = SharedStore(pools=[(LOC_H, n_rec * rec)], block_bytes=block)
    items = []
    payload = bytes(range(256)) * (rec // 256) + b"x" * (rec % 256)
    for _ in range(n_rec):
        s = store.reserve(LOC_H)
        if s < 0 or not store.write(s, payload):
            break
        items.append((s, store.generation(s)))
    rng = np.random.default_rng(0)
    order = [items[i] for i in rng.integers(0, len(items), 4096)]
    ctx = mp.get_context(args.start_method)
    out = ctx.Queue()
    procs = [ctx.Process(target=_reader, args=(store, order, args.warmup, args.reads, out))
             for _ in range(args.workers)]
    for p in procs:
        p.start()
    res = [out.get() for _ in procs]
    for p in procs:
        p.join()
    print(f"[reads] record={rec} B, cached records={len(items)}, "
          f"block_bytes={block}, workers={args.workers} ({args.start_method})")
    for i, (dt, misses) in enumerate(res):
        rate = args.reads / dt
        print(f"  worker {i}: {rate:,.0f} reads/s  {rate * rec / 1e9:.2f} GB/s  "
              f"{dt / args.reads * 1e6:.2f} us/read  misses={misses}")
    store.close()


def _plans(kind, n, rng, weights):
    if kind == "uniform":
        return rng.permutation(n), None, None
    idx = rng.choice(n, size=n, replace=True, p=weights / weights.sum())
    h = weights[idx] >= np.quantile(weights, 0.8)
    return idx, np.where(h, TIER_H, TIER_L).astype(np.int8), weights[idx]


def bench_bookkeeping(args):
    n, batch = args.samples, args.batch
    size, block = args.bk_record_bytes, args.bk_block_bytes or args.bk_record_bytes
    rec = b"r" * size
    weights = np.random.default_rng(1).pareto(2.0, n) + 1e-3
    print(f"[bookkeep] n_samples={n}, batch={batch}, cache={args.fraction:.0%} of the "
          f"dataset, {size}-byte records in {block}-byte blocks, {args.epochs} "
          f"measured epochs after 1 warm-up; CPU = thread CPU time")
    for kind in ("uniform", "skewed"):
        for pol in ("none", "lru", "minio", "importance"):
            # setup
            cfg = CacheConfig(cache_bytes=int(args.fraction * n) * -(-size // block)
                              * block, policy=pol, block_bytes=block)
            d = CacheDirectory(n_samples=n, config=cfg)
            rng = np.random.default_rng(0)
            recs = [rec] * max(batch, cfg.package_size)
            seq = 0
            t_ann = t_all = c_all = 0.0
            planned = hits = 0
            for epoch in range(1 + args.epochs):  # epoch 0 is the warm-up
                idx, tier, imp = _plans(kind, n, rng, weights)
                for b in range(0, len(idx), batch):
                    sl = slice(b, b + batch)
                    c0 = time.thread_time()
                    t0 = time.perf_counter()
                    a = d.annotate(idx[sl], None if tier is None else tier[sl],
                                   None if imp is None else imp[sl], seq=seq)
                    t1 = time.perf_counter()
                    singles = a.reads.singles  # one batched random read
                    for i in range(0, len(singles), len(recs)):
                        part = singles[i:i + len(recs)]
                        d.fill(part, recs[:len(part)])
                    for start, stop in a.reads.packages:  # sequential package reads
                        d.fill(range(start, stop), recs[:stop - start])
                    d.release(seq)
                    t2 = time.perf_counter()
                    c2 = time.thread_time()
                    seq += 1
                    if epoch:
                        t_ann += t1 - t0
                        t_all += t2 - t0
                        c_all += c2 - c0
                        planned += len(a)
                        hits += int(a.hit.sum())
                d.new_epoch()
            print(f"  {kind:8s} {pol:10s} hit={hits / planned:6.1%}  annotate "
                  f"{t_ann / planned * 1e6:5.2f} us/sample  annotate+fill+release "
                  f"{t_all / planned * 1e6:5.2f} us/sample (CPU {c_all / planned * 1e6:5.2f})")
            d.close()


def bench_memory(args):
    rec = args.record_bytes
    cache = args.cache_mib << 20
    blocks = [args.block_bytes] if args.block_bytes else [rec, max(64, rec // 4)]
    payload = b"m" * rec
    for block in blocks:
        for pol in ("lru", "importance"):
            # setup: fill the cache for real with a skewed plan (both pools, evictions)
            cfg = CacheConfig(cache_bytes=cache, policy=pol, block_bytes=block,
                              staging_bytes=args.staging_mib << 20,
                              max_entries=args.max_entries)
            d = CacheDirectory(n_samples=args.samples, config=cfg)
            rng = np.random.default_rng(0)
            weights = np.random.default_rng(1).pareto(2.0, args.samples) + 1e-3
            seq = 0
            for _ in range(2):
                idx, tier, imp = _plans("skewed", args.samples, rng, weights)
                for b in range(0, len(idx), 256):
                    a = d.annotate(idx[b:b + 256], tier[b:b + 256], imp[b:b + 256],
                                   seq=seq)
                    for start, stop in a.reads:
                        d.fill(range(start, stop), [payload] * (stop - start))
                    d.release(seq)
                    seq += 1
                d.new_epoch()
            # measurement: what is allocated now
            st, entries = d.store, d.stats()["entries"]
            shared_rss, shared_virtual = _meta_rss(st), st._region.meta_bytes
            t = st._t
            owner = sum(a.nbytes for a in (t.state, t.pool, t.last_use, t._free,
                                           d._index_of))
            del t  # its views of the shared mapping would outlive close()
            pol_slot, pol_sample, heap = _policy_bytes(d.policy, args.samples)
            alloc = sum(a.nbytes for a in st._alloc.values())  # free-run stacks
            total = shared_rss + owner + pol_slot + heap + alloc
            sample_bytes = d._slot_of.nbytes + pol_sample
            used = sum(st.used_bytes(p) for p in d._pools)
            print(f"[memory] policy={pol} cache_bytes={cache} record={rec} B "
                  f"block={block} B ({st.blocks_for(rec)} blocks/record) "
                  f"staging_bytes={cfg.staging_bytes}")
            print(f"  shared data region: {len(st._region.data)} B (cache_bytes + "
                  f"staging_bytes = {cfg.region_bytes} B); {used} B of records in "
                  f"{entries} entries")
            print(f"  metadata: shared slot table {shared_rss} B resident ("
                  f"{shared_virtual} B reserved, sparse), owner slot arrays {owner} B "
                  f"({st.capacity} slots), policy arrays {pol_slot} B, heap entries "
                  f"{heap} B, allocator free runs {alloc} B, per block 0 B")
            print(f"  => {total / entries:.1f} B per cached entry; plus per dataset "
                  f"sample {sample_bytes / args.samples:.1f} B")
            d.close()


def _meta_rss(store):
    """Resident bytes of the store's shared metadata mapping in this process."""
    import os
    inode = os.fstat(store._region.fds[1]).st_ino
    rss, mine = 0, False
    with open("/proc/self/smaps") as f:
        for line in f:
            head = line.split(maxsplit=1)[0]
            if "-" in head and all(c in "0123456789abcdef-" for c in head):
                mine = f" {inode} " in line
            elif mine and line.startswith("Rss:"):
                rss += int(line.split()[1]) * 1024
    return rss


def _policy_bytes(policy, n_samples):
    """(per-slot array bytes, per-dataset-sample array bytes, heap entry bytes)."""
    from array import array
    per_slot = per_sample = heap = 0
    stack, seen = [policy], set()
    while stack:
        obj = stack.pop()
        if id(obj) in seen:
            continue
        seen.add(id(obj))
        values = list(getattr(obj, "__dict__", {}).values())
        values += [getattr(obj, n, None) for n in getattr(type(obj), "__slots__", ())]
        for v in values:
            if isinstance(v, (array, np.ndarray)):
                nbytes = v.itemsize * len(v)
                if isinstance(v, array) and v.typecode == "Q":
                    heap += nbytes  # heap entries, live and dead
                elif len(v) == n_samples:
                    per_sample += nbytes
                else:
                    per_slot += nbytes
            elif v is not None and not isinstance(v, (int, float, str, bool, dict)) \
                    and (hasattr(v, "__dict__") or hasattr(type(v), "__slots__")):
                stack.append(v)
    return per_slot, per_sample, heap


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--section", choices=["all", "reads", "bookkeep", "memory"],
                   default="all")
    p.add_argument("--record-bytes", type=int, default=16384)
    p.add_argument("--block-bytes", type=int, default=None,
                   help="store block (default: reads use one block per record; "
                        "memory measures one block and four blocks per record)")
    p.add_argument("--cache-mib", type=int, default=256)
    p.add_argument("--staging-mib", type=int, default=0)
    p.add_argument("--max-entries", type=int, default=None)
    p.add_argument("--workers", type=int, default=1)
    p.add_argument("--start-method", default="spawn",
                   choices=["spawn", "fork", "forkserver"])
    p.add_argument("--reads", type=int, default=300_000)
    p.add_argument("--warmup", type=int, default=20_000)
    p.add_argument("--samples", type=int, default=50_000)
    p.add_argument("--batch", type=int, default=256)
    p.add_argument("--fraction", type=float, default=0.2)
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--bk-record-bytes", type=int, default=64,
                   help="record size of the bookkeeping section (tiny by default, so "
                        "that copying bytes does not count)")
    p.add_argument("--bk-block-bytes", type=int, default=None,
                   help="block size of the bookkeeping section (default: one record)")
    args = p.parse_args(argv)
    if args.section in ("all", "reads"):
        bench_reads(args)
    if args.section in ("all", "bookkeep"):
        bench_bookkeeping(args)
    if args.section in ("all", "memory"):
        bench_memory(args)


if __name__ == "__main__":
    main()
