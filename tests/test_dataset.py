"""ImpactDataset without the cache: plain indices, plans, DataLoader workers."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

import impact_loader as il
from impact_loader.layout import L_CACHE_BATCHES, MAX_L_SHARE
from impact_loader.dataset import ImpactDataset
from source_factories import make_samples


def _xy(sample):
    return torch.from_numpy(sample["x"]), sample["index"]


@pytest.fixture
def src(tmp_path):
    return il.write_lmdb(str(tmp_path / "d"), make_samples(96))


def test_getitem_with_plain_indices(src):
    ds = ImpactDataset(src)
    sample, idx = ds[17]
    assert idx == 17 and sample["index"] == 17
    with pytest.raises(IndexError, match="96"):
        ds[96]
    items = ds.__getitems__([3, 1])
    assert [i for _, i in items] == [3, 1] and [s["index"] for s, _ in items] == [3, 1]


@pytest.mark.parametrize("workers,method", [(0, None), (2, "fork"), (2, "spawn")])
def test_with_importance_sampler_and_workers(src, workers, method):
    ds = ImpactDataset(src, transform=_xy)
    sampler = il.ImportanceSampler(ds, batch_size=16, policy="uniform", seed=3)
    loader = DataLoader(ds, batch_sampler=sampler, num_workers=workers,
                        multiprocessing_context=method)
    seen = []
    for (x, y), idx in loader:
        assert torch.equal(y, idx)  # each record carries its own index
        seen.extend(idx.tolist())
        sampler.update(idx, torch.rand(len(idx)))
    assert sorted(seen) == list(range(96))


def test_plan_without_cache_reads_the_source(src):
    ds = ImpactDataset(src)
    plan = il.BatchPlan(np.array([5, 9, 5]))
    out = ds.__getitems__(plan)
    assert [s["index"] for s, _ in out] == [5, 9, 5] and ds.source_reads == 3


@pytest.mark.parametrize("bad", [-1, 1.5, True])
def test_bad_cache_bytes(src, bad):
    with pytest.raises(ValueError, match="cache_bytes"):
        ImpactDataset(src, cache_bytes=bad)


def test_not_a_source():
    with pytest.raises(TypeError, match="read_many"):
        ImpactDataset([1, 2, 3])


def test_cache_layout_follows_the_sampler():
    from impact_loader.layout import cache_layout

    kw = dict(n_samples=1000, record_bytes=100, batch_size=10, package_size=8)
    # Everything fits: one pool, no tiers (no substitution, nothing evicted).
    assert cache_layout("importance", 100_000, policy="impact", h_share=0.7, **kw) \
        == (1.0, False)
    assert cache_layout("minio", 100_000, policy="uniform", h_share=0.7, **kw) \
        == (None, False)
    # Unranked uniform plans use the H pool only; h_share=0 marks everything L.
    assert cache_layout("importance", 20_000, policy="uniform", h_share=0.7, **kw) \
        == (1.0, True)
    assert cache_layout("importance", 20_000, policy="uniform", h_share=0.0, **kw) \
        == (0.0, True)
    # Ranked plans: the L-cache gets room for the batches in flight, at most MAX_L_SHARE.
    h, tiers = cache_layout("importance", 20_000, policy="impact", h_share=0.7, **kw)
    assert tiers and h == pytest.approx(1 - MAX_L_SHARE)  # 200 records: L cannot fit
    h, _ = cache_layout("importance", 2_000_000 // 4, policy="impact", h_share=0.7,
                        **dict(kw, n_samples=100_000))
    assert 0.7 < h < 1
    assert cache_layout("lru", 20_000, policy="impact", h_share=0.7, **kw) == (None, True)


@pytest.mark.parametrize("n, records, planned_share", [
    (100_000, 5_000, 1.0), (20_000, 8_000, 0.5), (20_000, 16_000, 0.5), (4_000, 800, 0.5)])
def test_ranked_split_is_the_largest_h_cache_that_leaves_the_l_cache_room(
        n, records, planned_share):
    """The L need counts the L-tier samples the H-tier cap adds (a smaller H-cache marks
    fewer samples H-tier), and the H-cache gets every record the L-cache can spare."""
    from impact_loader.layout import cache_layout

    bs, pkg, h_share = 128, 64, 0.7
    h, _ = cache_layout("importance", records * 100, n_samples=n, record_bytes=100,
                        policy="impact", h_share=h_share, batch_size=bs,
                        package_size=pkg, planned_share=planned_share)
    planned = planned_share * n

    def room(share):  # L records left beyond the need of L_CACHE_BATCHES batches
        h_tier = min(h_share * planned, share * records) / planned
        return (1 - share) * records - (L_CACHE_BATCHES * (1 - h_tier) * bs + 2 * pkg)

    floor = 1 - MAX_L_SHARE
    assert floor - 1e-9 <= h <= 1
    if h > floor + 1e-9:
        assert room(h) >= -1e-6 * records  # the L-cache has its room ...
    else:
        assert room(h) < 0  # ... or cannot have it, and takes its maximum share
    if h < 1:
        assert room(min(1.0, h + 0.005)) < 0  # one step more H-cache breaks the room


def test_the_split_is_set_when_a_sampler_attaches_unless_given(src):
    record = len(src.read_many([0])[0])
    ds = ImpactDataset(src, cache_bytes=40 * record)
    il.ImportanceSampler(ds, batch_size=4, policy="uniform")
    assert ds.directory.config.h_fraction == 1.0 and ds.pipeline.tiers
    ds.close()
    ds = ImpactDataset(src, cache_bytes=40 * record, h_fraction=0.25)
    il.ImportanceSampler(ds, batch_size=4, policy="uniform")
    assert ds.directory.config.h_fraction == 0.25
    ds.close()


def test_a_cache_that_holds_everything_reads_each_sample_once(src):
    record = len(src.read_many([0])[0])
    ds = ImpactDataset(src, transform=_xy, cache_bytes=2 * len(src) * record)
    sampler = il.ImportanceSampler(ds, batch_size=16, policy="impact", warmup_epochs=1)
    assert not ds.pipeline.tiers
    for epoch in range(3):
        sampler.set_epoch(epoch)
        for plan in sampler:
            items = ds.__getitems__(plan)
            assert [s[1] for s, _ in items] == plan.indices.tolist()
            sampler.update(plan.indices, np.random.rand(len(plan)))
    stats = ds.pipeline.stats()
    assert stats["substitutions"] == 0
    assert ds.pipeline.prefetcher.samples_read == len(src) and ds.source_reads == 0
    ds.close()


def test_every_miss_goes_through_the_prefetcher_with_little_staging(src):
    record = len(src.read_many([0])[0])
    ds = ImpactDataset(src, transform=_xy, cache_bytes=8 * record, cache_policy="minio",
                       staging_bytes=40 * record)
    sampler = il.ImportanceSampler(ds, batch_size=4, policy="uniform")
    ds.pipeline.outstanding = 2
    for epoch in range(2):
        sampler.set_epoch(epoch)
        for plan in sampler:
            location = ds._annotation(plan)[1]  # the service's, from the shared table
            assert (location != 0).all()  # never left to the workers
            ds.__getitems__(plan)
    assert ds.source_reads == 0
    ds.close()


def test_batch_readiness_flags():
    from impact_loader.readiness import FAILED, PENDING, READY, BatchReadiness

    r = BatchReadiness(cells=1024, timeout=0.01)
    assert r.state(5) == PENDING and r.wait(5) == PENDING  # gives up after the timeout
    r.mark(5, True)
    r.mark(6, False)
    assert r.state(5) == READY and r.wait(5) == READY and r.state(6) == FAILED
    assert r.state(5 + 1024) == PENDING  # a reused cell never matches another batch
    assert not r.copied(5)
    r.mark_copied(5)  # the reader's mark: its own row, the state stays
    assert r.copied(5) and r.state(5) == READY
    assert not r.copied(5 + 1024) and not r.copied(4)
    r.close()
    assert r.closed
    with pytest.raises(ValueError, match="cells"):
        BatchReadiness(cells=10)


def _wait_once_orphaned(readiness, conn):
    import multiprocessing
    import os
    import time

    conn.send(os.getpid())
    starter = multiprocessing.parent_process().pid
    while os.getppid() == starter:
        time.sleep(0.01)
    t = time.monotonic()
    state = readiness.wait(0)  # nobody will ever mark batch 0
    conn.send((state, time.monotonic() - t))


def _start_and_die(readiness, conn):
    import multiprocessing
    import os

    multiprocessing.get_context("fork").Process(
        target=_wait_once_orphaned, args=(readiness, conn)).start()
    os._exit(0)


def test_a_worker_whose_parent_died_before_it_waited_stops_waiting():
    """The wait gives up when the process that started it is gone, also when it died
    before the wait began (the worker has been re-parented by then)."""
    import multiprocessing
    import os
    import signal

    from impact_loader.readiness import PENDING, BatchReadiness

    ctx = multiprocessing.get_context("fork")
    readiness = BatchReadiness(cells=1024, timeout=600.0)
    receive, send = ctx.Pipe(duplex=False)
    ctx.Process(target=_start_and_die, args=(readiness, send)).start()
    assert receive.poll(60)
    waiter = receive.recv()
    if not receive.poll(60):
        os.kill(waiter, signal.SIGKILL)
        pytest.fail("the orphaned waiter did not give up")
    state, waited = receive.recv()
    assert state == PENDING and waited < 60
    readiness.close()


def test_workers_wait_for_reads_handed_over_early(src):
    """A plan handed over before its reads landed is served from the store once ready."""
    record = len(src.read_many([0])[0])
    gate = __import__("threading").Event()

    class Slow:
        def __len__(self):
            return len(src)

        def read_many(self, idx):
            gate.wait(10)
            return src.read_many(idx)

        def decode(self, raw):
            return src.decode(raw)

    gate.set()  # let the size probe read
    ds = ImpactDataset(Slow(), transform=_xy, cache_bytes=len(src) * record // 2)
    gate.clear()
    sampler = il.ImportanceSampler(ds, batch_size=8, policy="uniform")
    plan = next(iter(sampler))
    assert plan.seq == 0 and ds.readiness.state(0) == 0  # reads still held back
    gate.set()
    items = ds.__getitems__(plan)
    assert [s[1] for s, _ in items] == plan.indices.tolist()
    assert ds.source_reads == 0 and ds.store_hits == len(plan)
    ds.close()


def test_a_second_sampler_on_the_same_dataset_continues_the_batch_numbers(src):
    record = len(src.read_many([0])[0])
    ds = ImpactDataset(src, transform=_xy, cache_bytes=30 * record)
    for _ in range(2):
        sampler = il.ImportanceSampler(ds, batch_size=8, policy="uniform")
        seen = []
        for plan in sampler:
            seen.extend(i for _, i in ds.__getitems__(plan))
        assert sorted(seen) == list(range(len(src)))
    assert ds.source_reads == 0  # every read went through the prefetcher, both times
    ds.close()


def _freeze_count(sample):
    import gc
    return gc.get_freeze_count()


def test_workers_freeze_what_they_inherited_and_the_main_process_does_not(tmp_path):
    """A worker's first batch puts the objects it inherited in the collector's
    permanent generation, so its full collections do not write to (and copy) the
    parent's pages; a dataset read in the main process freezes nothing."""
    import gc
    src = il.write_lmdb(str(tmp_path / "d"), make_samples(40, payload=16))
    ds = ImpactDataset(src, transform=_freeze_count, cache_bytes=0)
    before = gc.get_freeze_count()
    in_main = [c for c, _ in ds.__getitems__(range(8))]
    assert in_main == [before] * 8 and gc.get_freeze_count() == before
    loader = DataLoader(ds, batch_size=8, num_workers=2,
                        multiprocessing_context="fork", collate_fn=list)
    counts = [c for batch in loader for c, _ in batch]
    assert len(counts) == 40 and min(counts) > 0
    assert gc.get_freeze_count() == before
    ds.close()
