"""WorkerCounters: one row per process, summed in the main process; histogram buckets."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
from torch.utils.data import DataLoader

import impact_loader as il
from impact_loader._metrics_histogram import BUCKETS, Histogram, bucket_of, cumulative
from impact_loader.counters import SCALARS, WorkerCounters
from source_factories import make_samples


def test_main_process_counts_in_row_zero():
    c = WorkerCounters(max_workers=4)
    c.record_items((1, 2, 3), (4, 5, 6), fallbacks=2, store_bytes=100)
    c.record_source(3, 300, 0.002)
    t = c.totals()
    assert set(t) == set(SCALARS)
    assert (t["batches"], t["hits_none"], t["hits_h"], t["hits_l"]) == (1, 1, 2, 3)
    assert (t["misses_none"], t["misses_h"], t["misses_l"]) == (4, 5, 6)
    assert (t["fallbacks"], t["store_bytes"]) == (2, 100)
    assert (t["source_requests"], t["source_samples"], t["source_bytes"]) == (1, 3, 300)
    assert t["source_ns"] == 2_000_000
    lat = c.latency_counts()
    assert len(lat) == len(BUCKETS) + 1 and sum(lat) == 1 and lat[bucket_of(0.002)] == 1
    assert c._rows[1:].sum() == 0  # workers' rows untouched
    s = c.stats()
    assert (s["worker_store_hits"], s["worker_source_reads"]) == (6, 15)


def test_a_pickled_copy_shares_the_memory():
    c = WorkerCounters(max_workers=2)
    twin = pickle.loads(pickle.dumps(c))
    twin.record_source(5, 50, 0.0)
    assert c.totals()["source_samples"] == 5
    assert twin.max_workers == 2


def test_close_reads_zeros_and_bad_max_workers():
    c = WorkerCounters()
    c.record_source(1, 1, 0.0)
    c.close()
    c.close()
    assert c.closed and c.totals()["source_requests"] == 0
    assert sum(c.latency_counts()) == 0
    with pytest.raises(ValueError, match="max_workers=0"):
        WorkerCounters(max_workers=0)


def _index(sample):
    return sample["index"]


@pytest.mark.parametrize("method", ["fork", "spawn"])
def test_dataloader_workers_count_in_their_own_rows(tmp_path, method):
    src = il.write_lmdb(str(tmp_path / "d"), make_samples(96))
    ds = il.ImpactDataset(src, transform=_index,
                          cache_bytes=40 * len(src.read_many([0])[0]))
    sampler = il.ImportanceSampler(ds, batch_size=8, policy="uniform")
    loader = DataLoader(ds, batch_sampler=sampler, num_workers=2,
                        multiprocessing_context=method)
    try:
        for epoch in range(2):
            sampler.set_epoch(epoch)
            seen = sorted(i for _, idx in loader for i in idx.tolist())
            assert seen == list(range(96))
        t = ds.counters.totals()
        stats = ds.pipeline.stats()
        rows = ds.counters._rows.copy()
    finally:
        ds.close()
    assert ds.counters.closed  # close() unmaps the counter table too
    hits = t["hits_none"] + t["hits_h"] + t["hits_l"]
    misses = t["misses_none"] + t["misses_h"] + t["misses_l"]
    assert hits + misses == 2 * 96 == stats["planned"]
    assert hits >= stats["hits"] > 0  # second epoch: the cache holds ~40 samples
    assert t["batches"] == 2 * 12
    assert rows[0, 0] == 0  # the main process delivered nothing, it only probed sizes:
    assert rows[0, SCALARS.index("source_requests")] == 1
    assert rows[1, 0] > 0 and rows[2, 0] > 0 and rows[1, 0] + rows[2, 0] == 24


def test_plain_reads_in_the_main_process(tmp_path):
    src = il.write_lmdb(str(tmp_path / "d"), make_samples(16))
    ds = il.ImpactDataset(src)
    ds[3]
    ds.__getitems__([1, 2])
    t = ds.counters.totals()
    assert (t["misses_none"], t["batches"], t["source_requests"]) == (3, 2, 2)


def test_histogram_buckets_are_le_and_cumulative():
    h = Histogram()
    for v in (BUCKETS[0], BUCKETS[0] * 1.01, 0.0, 100.0):
        h.observe(v)
    assert h.count == 4 and h.sum == pytest.approx(BUCKETS[0] * 2.01 + 100.0)
    buckets, total = h.snapshot()
    assert buckets[0] == (repr(BUCKETS[0]), 2)  # 0 and the bound itself (le)
    assert buckets[1][1] == 3 and buckets[-1] == ("+Inf", 4)
    counts = [int(c) for _, c in buckets]
    assert counts == sorted(counts)
    assert cumulative([0] * (len(BUCKETS) + 1), 0.0)[0][-1] == ("+Inf", 0)
    assert np.all(np.diff(BUCKETS) > 0)
