"""The correctness proof: the cache only makes reads faster, never wrong.

Trains (reports losses) for several epochs through a stock DataLoader with workers, for
every selection policy and cache policy, substitution on, and checks every delivered
sample against the source's bytes for the index reported.
"""

from __future__ import annotations

import hashlib
from collections import Counter

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

import impact_loader as il
from impact_loader.dataset import ImpactDataset
from source_factories import make_samples

N = 600


def _check(sample):
    digest = hashlib.blake2b(sample["payload"].tobytes(), digest_size=8).digest()
    return sample["index"], digest == sample["digest"], torch.from_numpy(sample["x"])


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    return il.write_lmdb(str(tmp_path_factory.mktemp("e2e") / "d"), make_samples(N))


def _run(source, policy, cache_policy, method, epochs=4, substitution=True, service=False):
    record = len(source.read_many([0])[0])
    ds = ImpactDataset(source, transform=_check, cache_bytes=int(0.3 * N * record),
                       cache_policy=cache_policy, substitution=substitution,
                       cache_service=service)
    sampler = il.ImportanceSampler(ds, batch_size=32, policy=policy, seed=1,
                                   warmup_epochs=1, refresh_every=3)
    loader = DataLoader(ds, batch_sampler=sampler, num_workers=2,
                        multiprocessing_context=method, persistent_workers=True)
    reference = il.LMDBSource(source.path)
    per_epoch = []
    try:
        for epoch in range(epochs):
            sampler.set_epoch(epoch)
            planned = sampler.epoch_plan()[0].copy()
            delivered = []
            for (rec_index, digest_ok, x), idx in loader:
                assert torch.equal(rec_index, idx), "a record for another index"
                assert bool(digest_ok.all()), "payload bytes differ from the source"
                for k, i in enumerate(idx.tolist()[:4]):  # full decode vs source
                    want = reference.decode(reference.read_many([i])[0])
                    assert torch.equal(x[k], torch.from_numpy(want["x"].copy()))
                delivered.extend(idx.tolist())
                sampler.update(idx, torch.rand(len(idx)))
            per_epoch.append((planned, delivered))
        stats = ds.pipeline.stats()
    finally:
        ds.close()
    return per_epoch, stats


@pytest.mark.parametrize("service", [False, True], ids=["threads", "service"])
@pytest.mark.parametrize("policy,cache_policy", [
    ("uniform", "lru"), ("uniform", "minio"), ("uniform", "none"),
    ("importance", "importance"), ("selective", "importance"), ("impact", "importance")])
def test_every_policy_delivers_only_true_bytes_under_fork(source, policy, cache_policy,
                                                          service):
    per_epoch, stats = _run(source, policy, cache_policy, "fork", service=service)
    subs = stats.get("substitutions", 0)
    total_sub = 0
    for planned, delivered in per_epoch:
        assert len(delivered) == len(planned)
        # same multiset, up to the substitutions the cache made
        diff = sum((Counter(planned.tolist()) - Counter(delivered)).values())
        total_sub += diff
    assert total_sub <= subs
    if cache_policy != "importance":
        assert total_sub == 0


@pytest.mark.slow
@pytest.mark.parametrize("service", [False, True], ids=["threads", "service"])
def test_spawn_workers_with_impact_policy(source, service):
    per_epoch, stats = _run(source, "impact", "importance", "spawn", epochs=3,
                            service=service)
    assert stats["hits"] + stats["substitutions"] > 0  # the cache was really used
    for planned, delivered in per_epoch:
        assert len(delivered) == len(planned)


@pytest.mark.parametrize("service", [False, True], ids=["threads", "service"])
def test_uniform_without_substitution_delivers_every_index_once(source, service):
    per_epoch, _ = _run(source, "uniform", "importance", "fork", epochs=3,
                        substitution=False, service=service)
    for planned, delivered in per_epoch:
        assert sorted(delivered) == list(range(N))


@pytest.mark.parametrize("service", [False, True], ids=["threads", "service"])
def test_cache_is_used_and_reads_go_through_the_prefetcher(source, service):
    _, stats = _run(source, "uniform", "minio", "fork", epochs=3, service=service)
    assert stats["hits"] > 0.2 * N  # 30% cache: later epochs hit about 30%
    assert stats["storage_requests"] > 0
