"""ImpactDataset without the cache: plain indices, plans, DataLoader workers."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

import impact_loader as il
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
