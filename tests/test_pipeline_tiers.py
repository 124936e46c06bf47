"""The pipeline hands batches over: H-tier no more than the H-cache holds (cap_h_tier),
consumed batches released off the training loop's thread."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest
import torch

import impact_loader as il
from impact_loader.pipeline import cap_h_tier
from impact_loader.plan import TIER_H, TIER_L
from impact_loader.readiness import PENDING
from lock_holder import held_by_another_thread
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
    ds = il.ImpactDataset(src, transform=_xy, cache_bytes=80 * 512,
                          cache_service=False)
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


def _record_releases(pipeline):
    """Wrap the directory's ``release``: returns the list of ``(seq, thread name)``
    calls it then records."""
    released, orig = [], pipeline.directory.release

    def spy(seq):
        released.append((seq, threading.current_thread().name))
        orig(seq)

    pipeline.directory.release = spy
    return released


def _wait_released(released, seq, timeout=10):
    """Wait until batch ``seq`` or a later one was released (the annotator thread
    releases after the hand-over that allowed it)."""
    deadline = time.monotonic() + timeout
    while (not released or released[-1][0] < seq) and time.monotonic() < deadline:
        time.sleep(0.01)


def test_consumed_batches_are_released_on_the_annotator_thread(tmp_path):
    """The hook only records what was consumed; the annotator thread releases it, so
    ``next(loader)`` never waits for the directory lock held by an annotation."""
    src = il.write_lmdb(str(tmp_path / "d"), make_samples(400, payload=64))
    ds = il.ImpactDataset(src, transform=_xy, cache_bytes=80 * 512,
                          cache_service=False)
    loader = il.ImpactLoader(ds, batch_size=20, policy="uniform")
    try:
        pipeline = ds.pipeline
        pipeline.outstanding = 2
        released = _record_releases(pipeline)
        # The sampler alone: nothing reads the batches, so none is marked copied, and
        # batch k counts as consumed once `outstanding + 1` more were handed over:
        # 0 .. 16 of 20 here.
        handed = list(loader.batch_sampler)
        assert len(handed) == 20
        _wait_released(released, 16)
        assert {name for _, name in released} == {"impact-annotate"}
        seqs = [s for s, _ in released]
        assert seqs == sorted(seqs) and seqs[-1] == 16  # later batches may still be read
        # With the directory lock held (as a running annotation holds it), the hook still
        # hands over batches that are already annotated, and records their release.
        loader.sampler.set_epoch(1)
        it = iter(loader)
        next(it)

        def next_three_read():
            # Annotated, and their reads stored: storing takes the directory lock, so a
            # batch whose reads were still in flight would wait for the lock holder below.
            ahead = dict(pipeline.annotator._ahead)
            items = [ahead[b] for b in sorted(ahead)[:3]]
            return len(items) == 3 and all(
                job is None or ds.readiness.state(job.tag) != PENDING
                for _, job, _, _ in items)

        deadline = time.monotonic() + 30
        while not next_three_read() and time.monotonic() < deadline:
            time.sleep(0.01)
        assert next_three_read()
        with held_by_another_thread(pipeline._lock):
            t0 = time.monotonic()
            for _ in range(3):
                next(it)
            waited = time.monotonic() - t0
        assert waited < 5, f"the hook waited {waited:.1f} s for the directory lock"
    finally:
        ds.close()  # also when an assertion failed: no threads left to later tests


@pytest.mark.parametrize("workers", [0, 2])
def test_copied_batches_are_released_before_the_hand_over_count(tmp_path, workers):
    """A batch whose reader marked it copied is released at the next hand-over, well
    before ``outstanding`` more batches were handed over; the entries its plan pinned
    stop counting against the annotator's room."""
    src = il.write_lmdb(str(tmp_path / "d"), make_samples(400, payload=64))
    ds = il.ImpactDataset(src, transform=_xy, cache_bytes=80 * 512,
                          cache_service=False)
    kw = dict(num_workers=workers, multiprocessing_context="fork") if workers else {}
    loader = il.ImpactLoader(ds, batch_size=20, policy="uniform", **kw)
    try:
        pipeline = ds.pipeline
        pipeline.outstanding = 10  # the count alone would release up to 19 - 11 = 8
        released = _record_releases(pipeline)
        got = [idx for _, idx in loader]
        assert len(got) == 20
        # The last hand-over (batch 19) came after batch 19 - 1 (no workers) or
        # 19 - 4 (2 workers x prefetch 2) was received, hence copied: released by then.
        least = 18 if workers == 0 else 15
        _wait_released(released, least)
        assert released and released[-1][0] >= least
        assert all(ds.readiness.copied(s) for s in range(least + 1))
        annotator = pipeline.annotator
        with annotator.cv:  # pinned: exactly the batches handed over and not released
            held = {p: sum(use[p] for _, use in annotator._pinned)
                    for p in annotator.turnover}
            assert annotator._held == held
            assert all(seq > released[-1][0] for seq, _ in annotator._pinned)
    finally:
        ds.close()


def test_an_annotator_that_fails_deciding_what_to_annotate_surfaces_at_once(tmp_path):
    """A bug in the annotator's scheduling (not in an annotation) must not kill its
    thread silently and leave the loop waiting for the full ``wait_timeout``."""
    src = il.write_lmdb(str(tmp_path / "d"), make_samples(200, payload=64))
    ds = il.ImpactDataset(src, transform=_xy, cache_bytes=40 * 512,
                          cache_service=False)
    loader = il.ImpactLoader(ds, batch_size=10, policy="uniform")
    try:
        def broken():
            raise RuntimeError("lookahead broke")

        ds.pipeline.prefetcher.lookahead = broken
        ds.pipeline.wait_timeout = 30  # the thread's death used to show only as this
        with pytest.raises(il.PrefetchError, match="lookahead broke"):
            for _ in loader:
                pass
    finally:
        ds.close()


def test_a_failed_release_surfaces_in_the_training_loop(tmp_path):
    src = il.write_lmdb(str(tmp_path / "d"), make_samples(200, payload=64))
    ds = il.ImpactDataset(src, transform=_xy, cache_bytes=40 * 512,
                          cache_service=False)
    loader = il.ImpactLoader(ds, batch_size=10, policy="uniform")
    ds.pipeline.outstanding = 1

    def broken(seq):
        raise OSError(f"release {seq} broke")

    ds.pipeline.directory.release = broken
    with pytest.raises(il.PrefetchError, match=r"releasing.*release \d+ broke"):
        for _ in loader:
            pass
    ds.close()


def test_room_counts_the_entries_handed_batches_pin_until_released():
    """The annotator may run ahead while the L-cache holds the entries of the batches
    handed over (exactly, until released) plus one more batch and one of slack. The
    old estimate (every batch the DataLoader may hold at the peak size) refused even
    this first batch ahead: (5 + 3) x 115 + 128 > 556."""
    from types import SimpleNamespace

    from impact_loader._annotator import Annotator
    from impact_loader.plan import LOC_L

    config = SimpleNamespace(staging_bytes=0, policy="importance", l_bytes=556 * 512,
                             block_bytes=512, package_size=64)
    directory = SimpleNamespace(config=config, store=SimpleNamespace(
        pool_blocks=lambda pool: 556))
    a = Annotator(directory, threading.Lock(), prefetcher=None, batch_size=128,
                  record_blocks=1, tiers=True, backlog_target=0, failed=lambda seq: None)
    assert a.turnover == {LOC_L: (556, 128)}
    a.peak[LOC_L] = 115
    assert a._room()  # nothing held: 2 x 115 + 128 = 358 <= 556

    def hand_over(b, seq, entries):
        a._ahead[b] = (SimpleNamespace(seq=seq), None, None, {LOC_L: entries})
        a._use[LOC_L] += entries  # annotated ahead: counted as in use
        a.take(b, timeout=1)
        assert a._use[LOC_L] == 0  # handed over: now pinned instead

    hand_over(0, 10, 100)
    assert a._held[LOC_L] == 100 and a._room()  # 100 + 358 = 458
    hand_over(1, 11, 100)
    assert a._held[LOC_L] == 200 and not a._room()  # 200 + 358 = 558 > 556
    a.release(10)  # batch 10 consumed (or copied): its entries no longer count
    assert a._held[LOC_L] == 100 and a._room()
    a.release(11)
    assert a._held[LOC_L] == 0 and not a._pinned
