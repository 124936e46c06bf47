"""Hit ratios by simulation (no real bytes: 64-byte records, one block each)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from impact_loader.cache import CacheConfig, CacheDirectory
from impact_loader.cache.codes import LOC_L, TIER_H, TIER_L

BLOCK = 64
REC = b"r" * BLOCK


def simulate(policy, n, c, epochs, warm, seed=0, batch=256, plan=None, **kw):
    """Hit ratio over epochs after ``warm`` warm-up epochs."""
    cfg = CacheConfig(cache_bytes=int(round(c * n)) * BLOCK, policy=policy,
                      block_bytes=BLOCK, **kw)
    d = CacheDirectory(n_samples=n, config=cfg)
    rng = np.random.default_rng(seed)
    seq = hits = total = h_hits = h_total = 0
    recs = [REC] * max(batch, cfg.package_size)
    for e in range(epochs):
        idx, tier, imp = plan(rng) if plan else (rng.permutation(n), None, None)
        for b in range(0, len(idx), batch):
            sl = slice(b, b + batch)
            a = d.annotate(idx[sl], None if tier is None else tier[sl],
                           None if imp is None else imp[sl], seq=seq)
            for start, stop in a.reads:
                d.fill(range(start, stop), recs[:stop - start])
            d.release(seq)
            seq += 1
            if e >= warm:
                hits += int(a.hit.sum())
                total += len(a)
                if tier is not None:
                    h = a.tier == TIER_H
                    h_hits += int(a.hit[h].sum())
                    h_total += int(h.sum())
        d.new_epoch()
    d.close()
    return hits / total, (h_hits / h_total if h_total else 0.0)


@pytest.mark.parametrize("c", [0.1, 0.2, 0.4])
def test_minio_hits_c_and_lru_hits_formula(c):
    n = 5000
    minio, _ = simulate("minio", n, c, epochs=6, warm=2)
    lru, _ = simulate("lru", n, c, epochs=6, warm=2)
    assert abs(minio - c) < 0.015
    assert abs(lru - (c + (1 - c) * math.log(1 - c))) < 0.015


def test_importance_beats_lru_and_minio_on_h_hits_under_skew():
    n = 4000
    weights = np.random.default_rng(42).pareto(2.0, n) + 1e-3
    p = weights / weights.sum()
    h_set = weights >= np.quantile(weights, 0.8)  # top 20% are H-samples

    def plan(rng):
        idx = rng.choice(n, size=n // 2, replace=True, p=p)
        tier = np.where(h_set[idx], TIER_H, TIER_L).astype(np.int8)
        return idx, tier, weights[idx]

    res = {pol: simulate(pol, n, 0.1, epochs=6, warm=2, plan=plan)[1]
           for pol in ("importance", "lru", "minio")}
    assert res["importance"] > res["lru"] + 0.05, res
    assert res["importance"] > res["minio"] + 0.05, res


def _l_directory(substitution=True):
    cfg = CacheConfig(cache_bytes=64 * BLOCK, policy="importance", block_bytes=BLOCK,
                      h_fraction=0.0, package_size=8, substitution=substitution)
    return CacheDirectory(n_samples=1000, config=cfg)


def test_l_substitution_once_per_epoch_then_miss():
    d = _l_directory()
    a = d.annotate([3], [TIER_L], seq=0)  # empty L-cache: package [0, 8) is loaded
    assert a.location[0] == LOC_L and not a.hit[0] and a.indices[0] == 3
    assert list(a.reads) == [(0, 8)]
    d.fill(range(0, 8), [REC] * 8)
    got = [d.lookup(j) for j in range(100, 107)]  # lookup never loads packages
    assert sorted(r[0] for r in got) == [0, 1, 2, 4, 5, 6, 7]  # 3 was used directly
    for j, (delivered, loc, slot, gen) in zip(range(100, 107), got):
        assert loc == LOC_L and d.store.read(slot, gen) == REC
    assert d.lookup(107) is None  # exhausted: a miss
    assert d.lookup(5)[0] == 5  # a cached sample is still found directly
    d.new_epoch()
    r = d.lookup(900)
    assert r is not None and r[0] in range(8)  # substitutes renewed next epoch
    d.close()


def test_substitutes_unique_within_an_epoch():
    d = _l_directory()
    rng = np.random.default_rng(1)
    seq = 0
    for _ in range(3):
        seen = set()
        for _ in range(20):
            idx = rng.choice(1000, 8, replace=False)
            a = d.annotate(idx, [TIER_L] * 8, seq=seq)
            for start, stop in a.reads:
                d.fill(range(start, stop), [REC] * (stop - start))
            subs = a.indices[a.substituted].tolist()
            assert not seen & set(subs)
            assert len(set(subs)) == len(subs)
            seen |= set(subs)
            d.release(seq)
            seq += 1
        d.new_epoch()
    assert d.stats()["substitutions"] > 20
    d.close()


def test_l_cached_sample_is_a_direct_hit_and_substitution_can_be_off():
    d = _l_directory(substitution=False)
    a = d.annotate([10], [TIER_L], seq=0)
    d.fill(range(8, 16), [REC] * 8)
    b = d.annotate([12, 200], [TIER_L, TIER_L], seq=1)
    assert b.hit[0] and not b.substituted.any()
    assert b.indices.tolist() == [12, 200]
    assert d.lookup(300) is None
    del a
    d.close()


def test_full_l_cache_keeps_refilling_with_packages():
    """Once the L pool is full, misses still load packages (old ones are evicted)."""
    d = _l_directory()  # 64 one-block entries, packages of 8
    rng = np.random.default_rng(3)
    seq, per_epoch = 0, []
    for _ in range(4):
        loaded = subs = 0
        for _ in range(30):
            idx = rng.choice(1000, 16, replace=False)
            a = d.annotate(idx, [TIER_L] * 16, seq=seq)
            for start, stop in a.reads:
                d.fill(range(start, stop), [REC] * (stop - start))
            loaded += sum(stop - start for start, stop in a.reads.packages)
            subs += int(a.substituted.sum())
            d.release(seq)
            seq += 1
        per_epoch.append((loaded, subs))
        d.new_epoch()
    assert d.store.used_bytes(LOC_L) == 64 * BLOCK  # full
    assert all(loaded >= 64 and subs >= 64 for loaded, subs in per_epoch), per_epoch
    assert d.stats()["evicted"] > 3 * 64
    d.close()
