"""The pipeline marks H-tier no more samples than the H-cache holds (cap_h_tier)."""

from __future__ import annotations

import numpy as np
import torch

import impact_loader as il
from impact_loader.pipeline import cap_h_tier
from impact_loader.plan import TIER_H, TIER_L
from source_factories import make_samples


def test_cap_keeps_the_most_important_h_tier_samples():
    rng = np.random.default_rng(0)
    importance = rng.random(100)
    indices = rng.permutation(100)[:60]
    tier = np.where(np.arange(60) < 40, TIER_H, TIER_L).astype(np.int8)
    out = cap_h_tier(indices, tier, importance, 10)
    h = out == TIER_H
    assert h.sum() == 10
    assert np.all(tier[h] == TIER_H)  # only H-tier samples stay H
    was_h = importance[indices[tier == TIER_H]]
    assert np.array_equal(np.sort(importance[indices[h]]), np.sort(was_h)[-10:])
    assert np.array_equal(out[tier == TIER_L], tier[tier == TIER_L])
    assert cap_h_tier(indices, tier, importance, 40) is tier  # fits: unchanged
    assert np.all(cap_h_tier(indices, tier, importance, 0) == TIER_L)


def _xy(s):
    return torch.from_numpy(s["x"]), s["label"]


def test_plans_handed_to_workers_respect_the_h_cache(tmp_path):
    src = il.write_lmdb(str(tmp_path / "d"), make_samples(400, payload=64))
    ds = il.ImpactDataset(src, transform=_xy, cache_bytes=80 * 512)
    loader = il.ImpactLoader(ds, batch_size=20, sampler_options={"warmup_epochs": 1})
    pipeline = ds.pipeline
    assert pipeline.h_records is not None and 0 < pipeline.h_records < 80
    seen = []
    orig = pipeline.__call__

    class Spy:
        def __call__(self, plan):
            out = orig(plan)
            seen.append((plan.epoch, int(np.count_nonzero(out.tier == TIER_H))))
            return out

    loader.sampler.annotator = Spy()
    for epoch in range(3):
        loader.set_epoch(epoch)
        for (x, y), idx in loader:
            loader.update(idx, torch.rand(len(idx)))
    per_epoch = {}
    for e, k in seen:
        per_epoch[e] = per_epoch.get(e, 0) + k
    # The policy marks 70% of each epoch H-tier; the pipeline at most what H holds.
    assert all(v <= pipeline.h_records for v in per_epoch.values())
    assert loader.sampler.stats()["tier_h"] > pipeline.h_records
    ds.close()
