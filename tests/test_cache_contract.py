"""Contract every cache policy in the name table must honour (driven via the directory)."""

from __future__ import annotations

import zlib

import numpy as np
import pytest

from impact_loader.cache import CacheConfig, CacheDirectory
from impact_loader.cache.codes import (LOC_H, LOC_L, LOC_SOURCE, LOC_STAGING, TIER_H,
                                       TIER_L, TIER_NONE)
from impact_loader.cache.registry import POLICIES

N = 400
BLOCK = 64


def record(i: int) -> bytes:
    """Variable-size record embedding its index and a checksum."""
    body = (i.to_bytes(4, "little") * (1 + i % 37))
    return body + zlib.crc32(body).to_bytes(4, "little")


def make(policy, cache_records=60, **kw):
    cfg = CacheConfig(cache_bytes=cache_records * 2 * BLOCK, policy=policy,
                      block_bytes=BLOCK, package_size=8, **kw)
    return CacheDirectory(n_samples=N, config=cfg)


def drive(d, epochs=3, batch=16, seed=0, skew=False, check=True, seq0=0):
    """Run epochs through annotate/fill/read/release; return hit count and reads."""
    rng = np.random.default_rng(seed)
    seq, hits = seq0, 0
    imp_all = rng.pareto(1.5, N) if skew else np.zeros(N)
    for _ in range(epochs):
        perm = rng.permutation(N)
        tier = np.where(imp_all[perm] > np.median(imp_all), TIER_H, TIER_L) \
            if skew else np.zeros(N, np.int8)
        for b in range(0, N, batch):
            sl = slice(b, b + batch)
            a = d.annotate(perm[sl], tier[sl], imp_all[perm][sl], seq=seq)
            for start, stop in a.reads:
                d.fill(range(start, stop), [record(i) for i in range(start, stop)])
            if check:
                check_annotation(d, a)
            hits += int(a.hit.sum())
            d.release(seq)
            seq += 1
        d.new_epoch()
    return hits


def check_annotation(d, a):
    for k in range(len(a)):
        if a.location[k] == LOC_SOURCE:
            assert a.slot[k] == -1 and a.generation[k] == -1
            assert a.indices[k] == a.planned[k]
            continue
        got = d.store.read(int(a.slot[k]), int(a.generation[k]))
        if got is not None:  # a miss is allowed, wrong bytes never
            assert got == record(int(a.indices[k]))
        if not a.substituted[k]:
            assert a.indices[k] == a.planned[k]
    for p in d._pools:
        assert d.store.used_bytes(p) <= d.store.pool_blocks(p) * BLOCK


@pytest.fixture(params=sorted(POLICIES))
def policy(request):
    return request.param


def test_round_trip_and_budget(policy):
    d = make(policy)
    hits = drive(d, skew=False)
    if policy == "none":
        assert hits == 0 and d.stats()["entries"] == 0
    else:
        assert hits > 0
    d.close()


def test_skewed_tiers_round_trip(policy):
    d = make(policy)
    drive(d, skew=True)
    d.close()


def test_zero_cache_bytes_caches_nothing(policy):
    d = CacheDirectory(n_samples=N, config=CacheConfig(cache_bytes=0, policy=policy))
    a = d.annotate(np.arange(20), seq=0)
    assert (a.location == LOC_SOURCE).all() and len(a.reads) == 0
    d.close()


def test_duplicate_index_in_batch_read_once(policy):
    d = make(policy)
    a = d.annotate([5, 5, 7], [TIER_H] * 3, [1.0] * 3, seq=0)
    assert a.reads.n_samples == len(set(a.reads.start.tolist()))
    if policy != "none":
        assert a.slot[0] == a.slot[1] >= 0
    d.close()


def test_staging_holds_unadmitted_misses_until_release(policy):
    d = make(policy, staging_bytes=16 * BLOCK)
    drive(d, epochs=1)  # fill the cache
    a = d.annotate(np.arange(N - 8, N), seq=10_000)
    staged = a.location == LOC_STAGING
    for start, stop in a.reads:
        d.fill(range(start, stop), [record(i) for i in range(start, stop)])
    for k in np.flatnonzero(staged):
        assert d.store.read(int(a.slot[k]), int(a.generation[k])) == record(int(a.indices[k]))
    d.release(10_000)
    for k in np.flatnonzero(staged):
        assert d.store.read(int(a.slot[k]), int(a.generation[k])) is None
    assert d.store.used_bytes(LOC_STAGING) == 0
    d.close()


def test_release_abandons_reservations_never_filled(policy):
    d = make(policy)
    a = d.annotate(np.arange(10), [TIER_H] * 10, np.arange(10.0), seq=0)
    d.release(0)  # the prefetcher never delivered
    assert d.store.free_slot_count() == d.store.max_entries
    b = d.annotate(np.arange(10), [TIER_H] * 10, np.arange(10.0), seq=1)
    assert not b.hit.any()
    del a
    d.close()


def test_fill_ignores_unrequested_and_rejects_oversized(policy):
    d = make(policy, cache_records=4)
    assert d.fill([3], [b"abc"]) == 0
    a = d.annotate([1], [TIER_H], [1.0], seq=0)
    if policy != "none" and len(a.reads):
        with pytest.raises(ValueError, match="larger than pool"):
            d.fill([1], [b"x" * 10_000])
    d.close()


@pytest.mark.parametrize("call, match", [
    (lambda d: d.annotate([N], seq=0), r"index 400 is outside 0..399"),
    (lambda d: d.annotate([-1], seq=0), r"index -1 is outside"),
    (lambda d: d.annotate([1, 2], [TIER_H], seq=0), r"2 indices but 1 tiers"),
    (lambda d: d.annotate([1], [7], seq=0), r"tier values must be 0"),
    (lambda d: d.annotate([1], [1], [float("nan")], seq=0), r"importance contains NaN"),
    (lambda d: d.annotate([1.5], seq=0), r"indices must be integers"),
    (lambda d: (d.annotate([1], seq=3), d.annotate([1], seq=2)), r"seq=2 must be"),
    (lambda d: d.fill([1, 2], [b""]), r"fill got 2 indices but 1 records"),
])
def test_bad_plan_input(policy, call, match):
    d = make(policy)
    with pytest.raises(ValueError, match=match):
        call(d)
    d.close()


def test_codes_match_the_plan_module():
    from impact_loader import plan
    from impact_loader.cache import codes
    for name in codes.__all__:
        assert getattr(codes, name) == getattr(plan, name)


def test_tier_none_default(policy):
    d = make(policy)
    a = d.annotate(np.arange(4), seq=0)
    assert (a.tier == TIER_NONE).all()
    assert set(a.location.tolist()) <= {LOC_SOURCE, LOC_H, LOC_L}
    d.close()


def test_multi_block_records_use_slots_per_entry_not_per_block(policy):
    """Records of four blocks: the slot arrays grow with the entries, not the blocks."""
    cfg = CacheConfig(cache_bytes=2000 * BLOCK, policy=policy, block_bytes=BLOCK,
                      h_fraction=1.0)
    d = CacheDirectory(n_samples=5000, config=cfg)

    def rec(i):
        return record(i).ljust(4 * BLOCK - 6, b"p")  # 4 blocks each

    for seq, start in enumerate(range(0, 5000, 250)):
        a = d.annotate(np.arange(start, start + 250), [TIER_H] * 250, np.ones(250),
                       seq=seq)
        for s, e in a.reads:
            d.fill(range(s, e), [rec(i) for i in range(s, e)])
        for k in np.flatnonzero(a.location != LOC_SOURCE):
            got = d.store.read(int(a.slot[k]), int(a.generation[k]))
            assert got is None or got == rec(int(a.indices[k]))
        d.release(seq)
    if policy != "none":
        entries = d.stats()["entries"]
        assert entries >= 450 and d.store.used_bytes(LOC_H) >= 450 * len(rec(0))
        assert d.store.capacity < 2 * entries < d.store.max_entries
        assert len(d._index_of) == d.store.capacity
    d.close()


def test_oversized_record_does_not_lose_the_records_placed_before_it(policy):
    d = make(policy, cache_records=8)
    a = d.annotate([1, 2], [TIER_H] * 2, [1.0, 1.0], seq=0)
    if policy == "none" or len(a.reads) < 2:
        d.close()
        return
    with pytest.raises(ValueError, match="larger than pool"):
        d.fill([1, 2], [record(1), b"x" * 100_000])
    slot = d.slot_of(1)
    assert d.store.state(slot) == 2  # LIVE: its bytes were published and counted
    assert d.store.read(slot, d.store.generation(slot)) == record(1)
    assert d.fill([1], [record(1)]) == 0  # not written twice
    assert d.store.used_bytes(LOC_H) == len(record(1))
    d.close()


def test_rescore_cached_matches_update_importance_on_cached_entries():
    n_cached = []
    for rescore in (False, True):
        d = make("importance")
        drive(d, epochs=1, skew=True)
        new = np.random.default_rng(5).random(N)
        if rescore:
            d.rescore_cached(new)
        else:
            d.update_importance(np.arange(N), new)
        d.new_epoch()
        n_cached.append(drive(d, epochs=1, skew=True, seed=1, seq0=10**4))
    assert n_cached[0] == n_cached[1]
    with pytest.raises(ValueError, match=r"shape \(3,\).*\(%d,\)" % N):
        make("importance").rescore_cached(np.zeros(3))


@pytest.mark.parametrize("policy", ["lru", "importance"])
def test_no_reservation_counts_on_memory_that_batches_in_flight_still_read(policy):
    # Batch 0 fills the cache and is not consumed; batch 1's misses could only take
    # batch 0's entries, whose memory returns at release(0). Reserving it anyway made
    # the fill find no free block: the reservation was abandoned and a worker read the
    # sample again. Now batch 1 is staged or read from the source, never abandoned.
    def rec(i):  # one block each, so no size estimate can be off
        return i.to_bytes(4, "little") * (BLOCK // 4)

    d = make(policy, cache_records=32)
    for seq, start in enumerate((0, 200)):
        idx = np.arange(start, start + 64)
        a = d.annotate(idx, np.full(64, TIER_H, np.int8), np.full(64, 1.0 + seq), seq=seq)
        for lo, hi in a.reads:
            d.fill(range(lo, hi), [rec(i) for i in range(lo, hi)])
        for k in range(64):
            if a.location[k] != LOC_SOURCE:
                assert d.store.read(int(a.slot[k]), int(a.generation[k])) == rec(start + k)
    assert d.counts["abandoned"] == 0
