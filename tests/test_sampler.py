"""ImportanceSampler: API, DataLoader use, bad input, and plan properties (hypothesis)."""

import pickle

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch.utils.data import DataLoader

from impact_loader.plan import TIER_H, TIER_L, BatchPlan
from impact_loader.sampler import ImportanceSampler
from impact_loader.sampling import POLICIES, SamplingConfig

POLICY_NAMES = sorted(POLICIES)


class Items:
    """A map-style dataset of ``n`` items whose sample is its own index."""

    def __init__(self, n):
        self.n = n

    def __len__(self):
        return self.n

    def __getitem__(self, i):
        return torch.tensor(float(i)), i


def _loss(idx, epoch):
    """A deterministic, non-negative per-sample loss."""
    idx = np.asarray(idx)
    return ((idx * 2654435761 + epoch * 97) % 1000) / 100.0


def _run_epoch(sampler, epoch=None):
    if epoch is not None:
        sampler.set_epoch(epoch)
    batches = []
    for plan in sampler:
        batches.append(plan.indices.copy())
        sampler.update(plan.indices, _loss(plan.indices, sampler.epoch))
    return batches


# ---------------------------------------------------------------- basic API
def test_dataloader_batch_sampler_yields_batchplans_to_getitem():
    sampler = ImportanceSampler(Items(50), 8, "uniform", seed=1)
    loader = DataLoader(Items(50), batch_sampler=sampler)
    assert len(loader) == 7
    seen = []
    for x, idx in loader:
        assert torch.equal(x, idx.float())
        sampler.update(idx, x * 0.1)
        seen.extend(idx.tolist())
    assert sorted(seen) == list(range(50))
    assert sampler.stats()["losses_received"] == 50


def test_plans_carry_tier_epoch_position_and_counter():
    sampler = ImportanceSampler(range(30), 7, "impact", warmup_epochs=1)
    sampler.set_epoch(0)
    plans = list(sampler)
    assert [p.position for p in plans] == list(range(5))
    assert all(isinstance(p, BatchPlan) and p.epoch == 0 for p in plans)
    tiers = np.concatenate([p.tier for p in plans])
    assert (tiers == TIER_H).sum() == 21 and (tiers == TIER_L).sum() == 9
    assert sampler.batches_yielded == 5
    idx, tier = sampler.epoch_plan()
    assert np.array_equal(idx, np.concatenate([p.indices for p in plans]))
    assert np.array_equal(tier, tiers) and idx.dtype == np.int32 and tier.dtype == np.int8
    assert all(p.indices.dtype == np.int64 for p in plans)  # batches widen the plan's int32
    assert pickle.loads(pickle.dumps(plans[0])).indices.tolist() == plans[0].indices.tolist()


def test_annotator_hook_wraps_each_plan():
    sampler = ImportanceSampler(range(10), 4, "uniform")
    sampler.annotator = lambda plan: ("annotated", plan.position)
    assert list(sampler) == [("annotated", 0), ("annotated", 1), ("annotated", 2)]
    assert sampler.batches_yielded == 3


@pytest.mark.parametrize("drop_last, sizes", [(False, [4, 4, 2]), (True, [4, 4])])
def test_drop_last_like_pytorch(drop_last, sizes):
    sampler = ImportanceSampler(range(10), 4, "uniform", drop_last=drop_last)
    assert [len(p) for p in sampler] == sizes and len(sampler) == len(sizes)


def test_iter_after_full_pass_advances_epoch_partial_pass_restarts():
    sampler = ImportanceSampler(range(20), 5, "uniform")
    first = [p.indices.tolist() for p in sampler]
    assert sampler.epoch == 0
    it = iter(sampler)
    assert sampler.epoch == 1
    part = next(it).indices.tolist()
    again = [p.indices.tolist() for p in sampler]  # restart of epoch 1
    assert sampler.epoch == 1 and again[0] == part and again != first
    sampler.set_epoch(1)  # same epoch: replay
    assert [p.indices.tolist() for p in sampler] == again
    sampler.set_epoch(0)
    assert [p.indices.tolist() for p in sampler] == first
    assert list(it) == []  # a superseded pass stops


def test_same_inputs_same_plans_and_seed_matters():
    def run(seed):
        s = ImportanceSampler(range(100), 16, "impact", seed, warmup_epochs=1)
        return [_run_epoch(s, e) for e in range(4)]
    a, b, c = run(5), run(5), run(6)
    assert all(np.array_equal(x, y) for ea, eb in zip(a, b) for x, y in zip(ea, eb))
    assert not np.array_equal(a[2][0], c[2][0])


def test_weights_types_and_values():
    s = ImportanceSampler(range(40), 8, "importance", smoothing=0.2)
    _run_epoch(s, 0)
    s.set_epoch(1)
    w_np = s.weights(np.array([0, 5, 39]))
    probs = s._plan.selection.probs  # the plan weights() used
    np.testing.assert_allclose(w_np, 1.0 / (40 * probs[[0, 5, 39]]))
    w_t = s.weights(torch.tensor([0, 5, 39]))
    assert isinstance(w_t, torch.Tensor) and w_t.dtype == torch.float32
    np.testing.assert_allclose(w_t.numpy(), w_np, rtol=1e-6)
    assert w_np.max() <= 1 / 0.2 + 1e-9
    u = ImportanceSampler(range(40), 8, "uniform")
    assert torch.equal(u.weights(torch.tensor([1, 2])), torch.ones(2))
    assert np.array_equal(u.weights(np.array([1, 2])), np.ones(2))


@pytest.mark.parametrize("policy", ["importance", "uniform"])
def test_cpu_tensor_weights_keep_the_shape_and_own_their_memory(policy):
    s = ImportanceSampler(range(40), 8, policy, smoothing=0.2)
    _run_epoch(s, 0)
    s.set_epoch(1)
    idx = torch.tensor([[0, 5], [39, 5]])
    w = s.weights(idx)
    assert w.shape == (2, 2) and w.dtype == torch.float32
    np.testing.assert_allclose(w.numpy().ravel(), s.weights(idx.numpy().ravel()),
                               rtol=1e-6)
    w.mul_(0)  # the caller may scale the result in place; later weights are unchanged
    assert s.weights(idx).min() > 0
    assert s.weights(torch.zeros(0, dtype=torch.int64)).shape == (0,)


@pytest.mark.parametrize("policy", ["importance", "uniform"])
def test_weights_reject_bad_indices_by_name(policy):
    s = ImportanceSampler(range(40), 8, policy)
    _run_epoch(s, 0)
    for bad in (np.array([3, 40]), torch.tensor([-1, 2]), [0, 99]):
        with pytest.raises(IndexError, match=r"out of range \[0, 40\)"):
            s.weights(bad)
    with pytest.raises(TypeError, match="integers"):
        s.weights(np.array([0.5]))
    assert len(s.weights(np.zeros(0, np.int64))) == 0


def test_update_accepts_tensors_with_grad_halves_lists_and_2d():
    s = ImportanceSampler(range(10), 5, "uniform")
    loss = torch.rand(3, requires_grad=True) * 2
    s.update(torch.tensor([0, 1, 2]), loss)
    s.update(np.array([3, 4]), torch.tensor([1.0, 2.0], dtype=torch.bfloat16))
    s.update([5], [0.5])
    s.update(torch.tensor([[6], [7]]), torch.tensor([[1.0], [2.0]]))
    assert s.table.scored.sum() == 8
    assert s.table.score[0] == pytest.approx(float(loss[0].detach()), rel=1e-6)


def test_stats_counts():
    s = ImportanceSampler(range(100), 10, "impact", warmup_epochs=1, refresh_every=2,
                          nonfinite="skip")
    for e in range(3):
        _run_epoch(s, e)
    s.update([0, 1, 2], [np.nan, 1.0, np.inf])
    st_ = s.stats()
    assert st_["epochs_planned"] == 3 and st_["warmup_epochs"] == 1 and st_["refreshes"] == 1
    assert st_["nonfinite"] == 2
    # the selection epoch trains on half the data: 33 by importance + 17 re-evaluated
    assert st_["samples_selected"] == st_["tier_h"] + st_["tier_l"] == 100 + 50 + 100
    assert st_["reevaluated"] == 17 and st_["updates"] == 10 + 5 + 10 + 1
    assert st_["scored"] == 100 and st_["batches_yielded"] == 25


# ---------------------------------------------------------------- bad input
@pytest.mark.parametrize("kwargs, exc, words", [
    (dict(policy="greedy"), ValueError, ["'greedy'", "'uniform'", "'impact'"]),
    (dict(batch_size=0), ValueError, ["batch_size=0", ">= 1"]),
    (dict(seed=-1), ValueError, ["seed=-1"]),
    (dict(trained_fraction=1.5), ValueError, ["trained_fraction=1.5", "(0, 1]"]),
    (dict(h_share=-0.1), ValueError, ["h_share=-0.1", "[0, 1]"]),
    (dict(warmup_epochs=-1), ValueError, ["warmup_epochs=-1", ">= 0"]),
    (dict(beta=0), ValueError, ["beta=0"]),
    (dict(ema_weight=0.0), ValueError, ["ema_weight=0.0"]),
    (dict(window=0), ValueError, ["window=0"]),
    (dict(smoothing=2), ValueError, ["smoothing=2"]),
    (dict(prior=float("nan")), ValueError, ["prior=nan"]),
    (dict(refresh_every=1.5), TypeError, ["refresh_every=1.5", "int"]),
    (dict(nonfinite="ignore"), ValueError, ["'ignore'", "'skip'"]),
    (dict(warmup=3), TypeError, ["warmup", "warmup_epochs"]),
    (dict(num_replicas=2, rank=2), ValueError, ["rank=2", "[0, 2)"]),
    (dict(num_replicas=0), ValueError, ["num_replicas=0"]),
    (dict(drop_last=1), TypeError, ["drop_last=1"]),
    (dict(config={"beta": 1}), TypeError, ["SamplingConfig"]),
])
def test_bad_arguments_have_clear_messages(kwargs, exc, words):
    args = dict(batch_size=4)
    args.update(kwargs)
    with pytest.raises(exc) as info:
        ImportanceSampler(range(10), **args)
    for w in words:
        assert w in str(info.value), str(info.value)


def test_bad_dataset():
    with pytest.raises(TypeError, match="no len"):
        ImportanceSampler(iter(range(3)), 2)
    with pytest.raises(ValueError, match="0 samples"):
        ImportanceSampler([], 2)


def test_bad_updates_have_clear_messages():
    s = ImportanceSampler(range(10), 4)
    with pytest.raises(ValueError, match=r"non-finite.*\[7\].*nonfinite='skip'"):
        s.update(torch.tensor([1, 7]), torch.tensor([1.0, float("nan")]))
    with pytest.raises(ValueError, match="1 losses for 2 indices"):
        s.update(torch.tensor([1, 2]), torch.tensor(0.5))
    with pytest.raises(IndexError, match=r"\[10\] are out of range \[0, 10\)"):
        s.update(torch.tensor([10]), torch.tensor([1.0]))
    with pytest.raises(TypeError, match="integers"):
        s.update(torch.tensor([1.0]), torch.tensor([1.0]))
    with pytest.raises(IndexError, match=r"\[12\]"):
        s.weights(np.array([12]))
    with pytest.raises(ValueError, match="epoch=-1"):
        s.set_epoch(-1)
    assert s.stats()["losses_received"] == 0


def test_config_object_and_overrides():
    cfg = SamplingConfig(beta=1.0)
    s = ImportanceSampler(range(10), 4, "selective", config=cfg, window=16)
    assert s.config.beta == 1.0 and s.config.window == 16 and cfg.window == 1024
    with pytest.raises(Exception):
        cfg.beta = 2.0  # frozen


# ---------------------------------------------------------------- properties
@settings(max_examples=40, deadline=None)
@given(n=st.integers(1, 60), batch_size=st.integers(1, 9), policy=st.sampled_from(POLICY_NAMES),
       drop_last=st.booleans(), replicas=st.integers(1, 3), seed=st.integers(0, 2**31),
       epochs=st.lists(st.integers(0, 8), min_size=1, max_size=4))
def test_plan_invariants_over_random_runs(n, batch_size, policy, drop_last, replicas, seed,
                                          epochs):
    kw = dict(drop_last=drop_last, num_replicas=replicas, warmup_epochs=1, refresh_every=3)
    ranks = [ImportanceSampler(range(n), batch_size, policy, seed, rank=r, **kw)
             for r in range(replicas)]
    twin = ImportanceSampler(range(n), batch_size, policy, seed, rank=0, **kw)
    for e in epochs:
        shares = []
        for s in ranks + [twin]:
            s.set_epoch(e)
            plans = list(s)
            assert len(plans) == len(s)
            for p in plans:
                assert 1 <= len(p) <= batch_size and p.epoch == e
                assert p.indices.min() >= 0 and p.indices.max() < n
                if drop_last:
                    assert len(p) == batch_size
            flat = np.concatenate([p.indices for p in plans]) if plans else np.zeros(0, int)
            shares.append(flat)
            # identical reports on every rank (as after a distributed merge)
            all_idx = np.arange(n)
            s.update(all_idx, _loss(all_idx, e))
        assert np.array_equal(shares[0], shares[-1])  # determinism
        assert len({len(x) for x in shares}) == 1  # equal-length shares
        sel = ranks[0]._plan.selection.indices
        m = sel.size
        if not drop_last and m:
            per = -(-m // replicas)
            padded = np.resize(sel, per * replicas)
            for r in range(replicas):
                assert np.array_equal(shares[r], padded[r::replicas])
        if policy == "uniform" and replicas == 1 and not drop_last:
            assert np.array_equal(np.sort(shares[0]), np.arange(n))


def test_yielded_plans_are_private_copies_epoch_plan_is_read_only():
    s = ImportanceSampler(range(12), 4, "uniform")
    idx, _ = s.epoch_plan()
    before = idx.copy()
    for plan in s:
        plan.indices[:] = 0  # e.g. a cache substituting samples in place
    assert np.array_equal(s.epoch_plan()[0], before)
    with pytest.raises(ValueError):
        idx[0] = 1


def test_plan_is_a_function_of_seed_epoch_and_table():
    a = ImportanceSampler(range(200), 10, "impact", 4, warmup_epochs=0)
    a.update(np.arange(200), _loss(np.arange(200), 0))
    b = ImportanceSampler(range(200), 10, "impact", 4, warmup_epochs=0)
    b.table.load_state_dict(a.table.state_dict())
    for s in (a, b):
        s.set_epoch(7)
    assert np.array_equal(a.epoch_plan()[0], b.epoch_plan()[0])
    c = ImportanceSampler(range(200), 10, "impact", 4, warmup_epochs=0)
    c.set_epoch(7)  # same seed and epoch, empty table: a different plan
    assert not np.array_equal(a.epoch_plan()[0], c.epoch_plan()[0])
