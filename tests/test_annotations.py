"""SharedAnnotations (the cache service's annotations, read by the workers) and deferred
BatchPlans: rows keyed by sequence number, reuse detected, progress cells, fallbacks."""

from __future__ import annotations

import multiprocessing as mp
import pickle

import numpy as np
import pytest
import torch

import impact_loader as il
from impact_loader.annotations import SharedAnnotations
from impact_loader.plan import LOC_H, LOC_SOURCE, BatchPlan
from source_factories import make_samples


def _arrays(n, base):
    idx = np.arange(base, base + n, dtype=np.int64)
    loc = np.full(n, LOC_H, np.int8)
    return idx, loc, idx * 2, idx * 3


def test_a_row_holds_its_batch_until_a_later_batch_reuses_it():
    t = SharedAnnotations(rows=64, width=8)
    idx, loc, slot, gen = _arrays(5, 100)
    assert t.read(3) is None  # never written
    t.write(3, idx, loc, slot, gen)
    got = t.read(3)
    for a, b in zip(got, (idx, loc, slot, gen)):
        np.testing.assert_array_equal(a, b)
    assert got[1].dtype == np.int8 and got[0].dtype == np.int64
    got[0][:] = -1  # copies: the row is untouched
    np.testing.assert_array_equal(t.read(3)[0], idx)
    assert t.read(3 + 64) is None  # same row, another batch
    t.write(3 + 64, *_arrays(8, 7))
    assert t.read(3) is None  # reused: the old batch no longer matches
    assert t.read(3 + 64)[0].tolist() == list(range(7, 15))
    t.close()


def test_a_row_being_written_is_not_read():
    t = SharedAnnotations(rows=64, width=4)
    t.write(9, *_arrays(4, 0))
    t._rows[9 % 64, 0] = 0  # the writer's first store: the stamp cleared
    assert t.read(9) is None
    t.close()


def test_bad_sizes_are_refused():
    with pytest.raises(ValueError, match="rows=8 must be an int >= 64"):
        SharedAnnotations(rows=8, width=4)
    with pytest.raises(ValueError, match="width=0"):
        SharedAnnotations(width=0)
    t = SharedAnnotations(width=4)
    with pytest.raises(ValueError, match="5 items does not fit rows of width 4"):
        t.write(0, *_arrays(5, 0))
    t.close()


def test_progress_cells_and_mail():
    t = SharedAnnotations(width=4)
    assert t.handed() is None and t.released() == -1 and t.mail() == 0
    t.hand(7, 0)
    assert t.handed() == (7, 0)
    t.hand(123456, 9999)
    assert t.handed() == (123456, 9999)
    t.release(41)
    assert t.released() == 41
    t.post()
    t.post()
    assert t.mail() == 2
    t.close()


def _child_reads(table, seq, out):
    got = table.read(seq)
    out.put(None if got is None else [a.tolist() for a in got])
    table.hand(3, 4)


@pytest.mark.parametrize("method", ["fork", "spawn"])
def test_another_process_reads_the_rows_and_writes_the_progress(method):
    t = SharedAnnotations(width=6)
    t.write(5, *_arrays(6, 50))
    ctx = mp.get_context(method)
    out = ctx.Queue()
    p = ctx.Process(target=_child_reads, args=(t, 5, out))
    p.start()
    got = out.get(timeout=60)
    p.join(timeout=60)
    assert p.exitcode == 0
    assert got[0] == list(range(50, 56)) and got[2] == [2 * i for i in range(50, 56)]
    assert t.handed() == (3, 4)  # the child's store is seen here
    t.close()


def test_a_deferred_plan_pickles_without_its_default_arrays():
    idx = np.arange(64, dtype=np.int64)
    tier = np.ones(64, np.int8)
    deferred = BatchPlan(idx, tier=tier, seq=12, position=3, epoch=2, deferred=True)
    plain = BatchPlan(idx, tier=tier, seq=12, position=3, epoch=2)
    assert len(pickle.dumps(deferred)) < len(pickle.dumps(plain)) - 1000
    back = pickle.loads(pickle.dumps(deferred))
    assert back.deferred and back.seq == 12 and back.position == 3 and back.epoch == 2
    np.testing.assert_array_equal(back.indices, idx)
    np.testing.assert_array_equal(back.planned, idx)
    np.testing.assert_array_equal(back.tier, tier)
    assert (back.location == LOC_SOURCE).all() and (back.slot == -1).all()
    assert not pickle.loads(pickle.dumps(plain)).deferred


def _xy(sample):
    return torch.from_numpy(sample["x"]), sample["label"]


def test_a_plan_whose_annotation_is_gone_is_read_from_the_source(tmp_path):
    """The row of a handed batch reused (or never written): the worker delivers the
    planned samples from the source, byte for byte, never another batch's."""
    src = il.write_lmdb(str(tmp_path / "d"), make_samples(64))
    record = len(src.read_many([0])[0])
    ds = il.ImpactDataset(src, transform=_xy, cache_bytes=32 * record, cache_service=True)
    try:
        sampler = il.ImportanceSampler(ds, batch_size=8, policy="uniform")
        it = iter(sampler)
        first = next(it)
        assert first.deferred
        ds.readiness.wait(first.seq)
        table = ds.annotations
        assert table.read(first.seq) is not None  # the service wrote it
        other = np.arange(8, dtype=np.int64)
        # Another batch in the same row: this batch's annotation is gone.
        table.write(first.seq + table.rows, other, np.full(8, LOC_H, np.int8),
                    other, other)
        before = ds.source_reads
        items = ds.__getitems__(first)
        assert [i for _, i in items] == first.indices.tolist()
        assert ds.source_reads - before == len(first)
        for ((x, y), i) in items:
            want = src.decode(src.read_many([i])[0])
            np.testing.assert_array_equal(x.numpy(), want["x"])
            assert y == want["label"]
        second = next(it)  # the next batches are served from the cache as usual
        items = ds.__getitems__(second)
        assert [i for _, i in items] == second.indices.tolist()
        assert ds.source_reads - before == len(first)
    finally:
        ds.close()
