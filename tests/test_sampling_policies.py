"""Selection policies: a shared contract, then each policy's statistics and schedule."""

import numpy as np
import pytest

from impact_loader.plan import TIER_H, TIER_L, TIER_NONE
from impact_loader.sampling import (POLICIES, ImportanceTable, SamplingConfig, epoch_rng,
                                    make_policy)
from impact_loader.sampling.base import index_dtype, shuffled
from impact_loader.sampling.impact import epoch_kind


def _table(n, seed=0, scored=True):
    t = ImportanceTable(n)
    if scored:
        rng = np.random.default_rng(seed)
        t.update(np.arange(n), rng.gamma(2.0, 1.0, n), epoch=0)
    return t


# ---------------------------------------------------------------- contract (all policies)
@pytest.mark.parametrize("name", sorted(POLICIES))
@pytest.mark.parametrize("scored", [False, True])
def test_contract(name, scored):
    cfg = SamplingConfig(warmup_epochs=1, refresh_every=3)
    policy = make_policy(name, cfg)
    assert policy.name == name
    t = _table(257, scored=scored)
    for epoch in range(5):
        sel = policy.select(t, epoch, epoch_rng(7, epoch))
        again = make_policy(name, cfg).select(t, epoch, epoch_rng(7, epoch))
        np.testing.assert_array_equal(sel.indices, again.indices)  # pure function
        np.testing.assert_array_equal(sel.tier, again.tier)
        assert sel.indices.dtype == np.int32 and sel.tier.dtype == np.int8
        assert sel.indices.shape == sel.tier.shape
        assert sel.indices.size > 0
        assert sel.indices.min() >= 0 and sel.indices.max() < t.n
        assert set(np.unique(sel.tier)) <= {TIER_NONE, TIER_H, TIER_L}
        if sel.probs is not None:
            assert sel.probs.shape == (t.n,) and sel.probs.sum() == pytest.approx(1.0)
            assert sel.probs.min() > 0
    other = policy.select(t, 1, epoch_rng(8, 1))
    assert not np.array_equal(other.indices, policy.select(t, 1, epoch_rng(7, 1)).indices)


def test_index_dtype_and_in_place_shuffle():
    assert index_dtype(1 << 31) == np.int32 and index_dtype((1 << 31) + 1) == np.int64
    for n in (1, 10, 1001):
        a = shuffled(np.arange(n, dtype=np.int32), epoch_rng(3, 1))
        assert a.dtype == np.int32 and np.array_equal(a, epoch_rng(3, 1).permutation(n))


def test_unknown_policy_lists_names():
    with pytest.raises(ValueError) as info:
        make_policy("greedy", SamplingConfig())
    for name in POLICIES:
        assert repr(name) in str(info.value)


# ---------------------------------------------------------------- uniform
def test_uniform_covers_every_index_exactly_once():
    t = _table(1000)
    policy = make_policy("uniform", SamplingConfig())
    orders = []
    for epoch in range(3):
        sel = policy.select(t, epoch, epoch_rng(0, epoch))
        assert np.array_equal(np.sort(sel.indices), np.arange(1000))
        assert (sel.tier == TIER_NONE).all() and sel.probs is None
        orders.append(sel.indices)
    assert not np.array_equal(orders[0], orders[1])


# ---------------------------------------------------------------- importance
def test_importance_frequencies_match_p_and_weighted_mean_is_unbiased():
    n, epochs = 20, 2000
    t = ImportanceTable(n)
    t.update(np.arange(n), np.linspace(0.1, 5.0, n) ** 2, epoch=0)
    policy = make_policy("importance", SamplingConfig(smoothing=0.1))
    counts = np.zeros(n)
    quantity = np.sin(np.arange(n)) + 2.0  # any known per-sample value
    estimates = []
    probs = None
    for epoch in range(epochs):
        sel = policy.select(t, epoch, epoch_rng(3, epoch))
        probs = sel.probs
        counts += np.bincount(sel.indices, minlength=n)
        w = 1.0 / (n * probs[sel.indices])
        estimates.append(np.mean(w * quantity[sel.indices]))
    draws = n * epochs
    freq = counts / draws
    sd = np.sqrt(probs * (1 - probs) / draws)
    assert np.all(np.abs(freq - probs) < 5 * sd)
    assert probs.min() >= 0.1 / n  # the floor: nobody starves
    est, se = np.mean(estimates), np.std(estimates) / np.sqrt(epochs)
    assert abs(est - quantity.mean()) < 5 * se
    assert abs(est - quantity.mean()) / quantity.mean() < 0.03


# ---------------------------------------------------------------- selective
@pytest.mark.parametrize("beta", [0.33, 1.0, 3.0])
def test_selective_keeps_one_over_one_plus_beta_on_uniform_losses(beta):
    n = 20000
    t = ImportanceTable(n, window=1024)
    t.update(np.arange(n), np.random.default_rng(1).random(n), epoch=0)
    policy = make_policy("selective", SamplingConfig(beta=beta, smoothing=0.0))
    kept = np.mean([policy.select(t, e, epoch_rng(0, e)).indices.size / n for e in range(3)])
    assert kept == pytest.approx(1 / (1 + beta), abs=0.02)


def test_selective_prefers_high_losses_and_keeps_unseen():
    n = 2000
    t = ImportanceTable(n)
    t.update(np.arange(n // 2), np.linspace(0, 1, n // 2), epoch=0)  # second half unseen
    sel = make_policy("selective", SamplingConfig(beta=2.0)).select(t, 1, epoch_rng(0, 1))
    kept = np.zeros(n, bool)
    kept[sel.indices] = True
    assert kept[n // 2:].all()
    assert kept[n // 4:n // 2].mean() > 2 * kept[:n // 4].mean()
    assert len(np.unique(sel.indices)) == sel.indices.size


# ---------------------------------------------------------------- impact
def test_impact_schedule_kinds():
    cfg = SamplingConfig(warmup_epochs=2, refresh_every=3)
    kinds = [epoch_kind(e, cfg) for e in range(9)]
    assert kinds == ["warmup", "warmup", "select", "select", "refresh",
                     "select", "select", "refresh", "select"]
    assert epoch_kind(50, SamplingConfig(warmup_epochs=0, refresh_every=0)) == "select"


def test_impact_warmup_is_full_data_with_tiers():
    t = _table(1000)
    sel = make_policy("impact", SamplingConfig()).select(t, 0, epoch_rng(0, 0))
    assert sel.kind == "warmup"
    assert np.array_equal(np.sort(sel.indices), np.arange(1000))
    h = sel.tier == TIER_H
    assert h.sum() == 700 and (sel.tier[~h] == TIER_L).all()
    imp = t.importance()[sel.indices]
    assert imp[h].min() >= imp[~h].max()  # H = the top 70% by importance


def test_impact_selection_epoch_sizes_importance_and_staleness():
    n = 10000
    t = ImportanceTable(n)
    scores = np.where(np.arange(n) < 1000, 10.0, 1.0)  # 1000 important samples
    t.update(np.arange(n), scores, epoch=4)
    t.last_epoch[5000:5500] = 0  # older scores than everyone else
    cfg = SamplingConfig(warmup_epochs=5, trained_fraction=0.5, reeval_share=0.25)
    sel = make_policy("impact", cfg).select(t, 5, epoch_rng(0, 5))
    assert sel.kind == "select"
    # the whole epoch is trained_fraction * n; a quarter of those left out is rescored
    k = round((5000 - 0.25 * n) / 0.75)
    r = 5000 - k
    assert sel.indices.size == 5000 and sel.reevaluated == r
    assert abs(r - 0.25 * (n - k)) <= 1
    assert len(np.unique(sel.indices)) == sel.indices.size
    chosen = np.zeros(n, bool)
    chosen[sel.indices] = True
    assert chosen[:1000].mean() > 0.9  # important ones almost surely in
    assert chosen[5000:5500].all()  # the stalest unselected are re-evaluated
    assert (sel.tier == TIER_H).sum() == int(0.7 * sel.indices.size + 0.5)


def test_impact_full_fraction_selects_everyone():
    t = _table(100)
    cfg = SamplingConfig(warmup_epochs=0, trained_fraction=1.0)
    sel = make_policy("impact", cfg).select(t, 0, epoch_rng(0, 0))
    assert np.array_equal(np.sort(sel.indices), np.arange(100))
