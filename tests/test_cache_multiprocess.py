"""Workers in other processes read while the owner admits and evicts; owner killed."""

from __future__ import annotations

import ast
import collections
import itertools
import multiprocessing as mp
import os
import pathlib
import queue
import signal
import subprocess
import sys
import textwrap
import time
import zlib

import numpy as np
import pytest

from impact_loader.cache import CacheConfig, CacheDirectory

N = 3000
READS_PER_WORKER = 60_000
CHURN = 1000  # evictions the owner makes at least while the workers read


def record(i: int) -> bytes:
    """1..4 KiB record: index, payload, CRC32 (so a torn or foreign read is caught)."""
    head = i.to_bytes(8, "little")
    body = head + bytes([i % 251]) * (1024 + (i * 7919) % 3072)
    return body + zlib.crc32(body).to_bytes(4, "little")


def _worker(store, batches, acks, results, quota):
    """Read the items of the last 12 batches over and over; count outcomes.

    Old batches point at entries the owner has already evicted, freed and reused, so
    the reads race with rewrites of the same blocks. The first batch is a *sync* batch:
    read at once and acknowledged, its entries live until then, so every worker reads
    real hits however late it started or however loaded the machine is. A worker stops
    after ``quota`` reads, but not before the owner has churned enough (``None``).
    """
    reads = wrong = misses = synced_hits = 0
    churned = False
    history = collections.deque(maxlen=12)

    def check(slot, gen, idx):
        got = store.read(slot, gen)
        if got is None:
            return 0, 1
        return (1, 0) if got == record(idx) else (-1, 0)

    while reads < quota or not churned:
        try:
            while True:
                message = batches.get_nowait()
                if message is None:
                    churned = True
                    continue
                items, sync = message
                history.append(items)
                if sync:
                    for item in items:
                        ok, missed = check(*item)
                        synced_hits += ok == 1
                        wrong += ok == -1
                    acks.put(os.getpid())
        except queue.Empty:
            pass
        for item in itertools.chain.from_iterable(history):
            ok, missed = check(*item)
            reads += 1
            misses += missed
            wrong += ok == -1
    results.put((os.getpid(), reads, wrong, misses, synced_hits))
    store.close()


def _run(methods, policy="lru"):
    cfg = CacheConfig(cache_bytes=300 * 4096, policy=policy, block_bytes=1024)
    d = CacheDirectory(n_samples=N, config=cfg)
    procs, queues = [], []
    results = mp.get_context("spawn").Queue()
    acks = mp.get_context("spawn").Queue()
    for m in methods:
        ctx = mp.get_context(m)
        q = ctx.Queue(maxsize=4)
        p = ctx.Process(target=_worker, args=(d.store, q, acks, results,
                                              READS_PER_WORKER))
        p.start()
        procs.append(p)
        queues.append(q)
    rng = np.random.default_rng(0)
    seq, done, out, churned = 0, 0, [], False
    try:
        while done < len(procs):
            idx = rng.integers(0, N, 64)
            tier = rng.integers(0, 3, 64) if policy == "importance" else None
            a = d.annotate(idx, tier, rng.random(64), seq=seq)
            for start, stop in a.reads:
                d.fill(range(start, stop), [record(i) for i in range(start, stop)])
            items = [(int(s), int(g), int(i)) for s, g, i in
                     zip(a.slot, a.generation, a.indices) if s >= 0]
            sync = seq == 0  # every worker reads batch 0 before it is released
            for q in queues:
                try:
                    if sync:  # wait for room: this batch must arrive
                        q.put((items, True), timeout=120)
                    else:
                        q.put_nowait((items, False))
                except queue.Full:
                    pass
            if sync:  # hold the batch's entries until every worker has read them
                for _ in queues:
                    acks.get(timeout=120)
            d.release(seq)  # free at once: workers may still read freed entries
            seq += 1
            if not churned and d.counts["evicted"] > 2 * CHURN:
                churned = True  # the workers may finish once their quota is read
                for q in queues:
                    q.put(None, timeout=120)
            try:
                while True:
                    out.append(results.get_nowait())
                    done += 1
            except queue.Empty:
                pass
    finally:
        for p in procs:
            p.join(timeout=30)
            if p.is_alive():
                p.kill()
        d.close()
    assert d.counts["evicted"] > CHURN  # the owner really churned while workers read
    return out


def test_fork_and_spawn_workers_never_read_wrong_bytes():
    out = _run(["fork", "spawn"])
    assert len(out) == 2
    total = sum(r for _, r, _, _, _ in out)
    assert total >= 100_000
    assert sum(w for _, _, w, _, _ in out) == 0
    assert all(h > 0 for _, _, _, _, h in out)  # each worker read real hits


def test_forkserver_worker_never_reads_wrong_bytes():
    out = _run(["forkserver", "forkserver"], policy="importance")
    assert sum(w for _, _, w, _, _ in out) == 0
    assert sum(r for _, r, _, _, _ in out) >= 100_000


def _memfd_holders(inode: int):
    """Processes holding a descriptor or mapping of the memfd with ``inode``."""
    holders = set()
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            for fd in os.listdir(f"/proc/{pid}/fd"):
                try:
                    if os.stat(f"/proc/{pid}/fd/{fd}").st_ino == inode and \
                            "memfd:impact-loader" in os.readlink(f"/proc/{pid}/fd/{fd}"):
                        holders.add(int(pid))
                except OSError:
                    pass
            with open(f"/proc/{pid}/maps") as f:
                for line in f:
                    if "memfd:impact-loader" in line and f" {inode} " in line:
                        holders.add(int(pid))
        except OSError:
            pass
    return holders


def test_kill_9_owner_leaks_nothing():
    shm_before = set(os.listdir("/dev/shm"))
    script = textwrap.dedent("""
        import os, sys, time
        from impact_loader.cache import SharedStore
        s = SharedStore(pools=[(1, 32 << 20)], block_bytes=4096)
        slot = s.reserve(1); s.write(slot, b"x" * 100000)
        print(os.stat(f"/proc/self/fd/{s._region.fds[0]}").st_ino, flush=True)
        time.sleep(60)
    """)
    p = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    try:
        inode = int(p.stdout.readline())
        assert _memfd_holders(inode) == {p.pid}
        os.kill(p.pid, signal.SIGKILL)
        p.wait(timeout=10)
    finally:
        if p.poll() is None:
            p.kill()
        p.stdout.close()
    assert _memfd_holders(inode) == set()
    # A leak is a new name that stays. Other processes on the machine create and
    # remove their own entries meanwhile (multiprocessing semaphores, torch tensors),
    # so transient names are given a moment to go; the killed owner uses neither.
    new = set(os.listdir("/dev/shm")) - shm_before
    for _ in range(20):
        new = {n for n in new if not n.startswith(("sem.mp-", "torch_"))
               and os.path.exists(f"/dev/shm/{n}")}
        if not new:
            break
        time.sleep(0.1)
    assert new == set()


def test_cache_package_imports_no_torch_plan_or_sampling():
    root = pathlib.Path(__file__).resolve().parents[1] / "cache"
    banned = ("torch", "impact_loader.plan", "impact_loader.sampling", "sampling")
    for path in root.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0:
                names = [node.module or ""]
            for name in names:
                assert not name.startswith(banned), f"{path.name} imports {name}"
