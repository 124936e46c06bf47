"""Resuming: stop mid-epoch, restore, and get exactly the rest of the uninterrupted run."""

import copy
import io

import numpy as np
import pytest
import torch
from torchdata.stateful_dataloader import StatefulDataLoader

from impact_loader.sampler import ImportanceSampler

N, BATCH, EPOCHS = 90, 8, 5
OPTS = dict(warmup_epochs=1, refresh_every=3, window=64)


def _loss(idx, epoch):
    idx = np.asarray(idx)
    return ((idx * 2654435761 + epoch * 97) % 1000) / 100.0


def _make(policy, seed=3):
    return ImportanceSampler(range(N), BATCH, policy, seed, **OPTS)


def _train(sampler, epochs, stop=None):
    """Run ``epochs`` with set_epoch; return (batches, state at ``stop=(epoch, k)``)."""
    out, state = [], None
    for e in epochs:
        sampler.set_epoch(e)
        for k, plan in enumerate(sampler):
            out.append((e, plan.position, plan.indices.tolist(), plan.tier.tolist()))
            sampler.update(plan.indices, _loss(plan.indices, e))
            if stop == (e, k):
                return out, sampler.state_dict()
    return out, state


def _roundtrip(state):
    buf = io.BytesIO()
    torch.save(state, buf)
    buf.seek(0)
    return torch.load(buf, weights_only=False)


@pytest.mark.parametrize("policy", ["impact", "importance", "selective", "uniform"])
@pytest.mark.parametrize("stop", [(2, 0), (2, 4), (4, 1)])
def test_stop_mid_epoch_restore_matches_uninterrupted(policy, stop):
    full, _ = _train(_make(policy), range(EPOCHS))
    head, state = _train(_make(policy), range(EPOCHS), stop=stop)
    assert state["position"] == stop[1] + 1 and state["epoch"] == stop[0]
    resumed = _make(policy, seed=99)  # the seed comes from the state
    resumed.load_state_dict(_roundtrip(state))
    tail, _ = _train(resumed, range(stop[0], EPOCHS))
    assert head + tail == full
    if policy == "importance":
        w = resumed.weights(np.arange(N))
        ref = _make(policy)
        _train(ref, range(EPOCHS))
        np.testing.assert_array_equal(w, ref.weights(np.arange(N)))


def test_restore_without_set_epoch_and_at_epoch_end():
    ref = _make("impact")
    full = [[p.indices.tolist() for p in ref] for _ in range(4)]  # auto-advancing epochs
    s = _make("impact")
    it = iter(s)
    next(it), next(it)
    t = _make("impact")
    t.load_state_dict(s.state_dict())
    rest = [p.indices.tolist() for p in t]
    assert rest == full[0][2:]
    end = t.state_dict()
    assert end["completed"] and end["position"] == len(full[0])
    u = _make("impact")
    u.load_state_dict(end)
    assert [[p.indices.tolist() for p in u] for _ in range(3)] == full[1:]


def test_state_shares_the_live_table_deepcopy_freezes_it():
    s = _make("uniform")
    state = s.state_dict()
    frozen = copy.deepcopy(state)
    s.update([3], [7.0])
    assert state["table"]["score"][3] == 7.0 and frozen["table"]["score"][3] == 0.0
    t = _make("uniform")
    t.load_state_dict(state)
    s.update([3], [1.0])
    assert t.table.score[3] == 7.0  # loading copies


def test_a_saved_int64_plan_restores_as_the_int32_plan():
    a = _make("impact")
    a.set_epoch(2)
    plan = a.epoch_plan()[0]
    state = copy.deepcopy(a.state_dict())
    state["plan"]["indices"] = state["plan"]["indices"].astype(np.int64)  # older states
    b = _make("impact")
    b.load_state_dict(state)
    restored = b.epoch_plan()[0]
    assert restored.dtype == plan.dtype == np.int32 and np.array_equal(restored, plan)


def test_mismatched_state_is_refused():
    state = _make("impact").state_dict()
    with pytest.raises(ValueError, match="policy='impact'.*policy='uniform'"):
        _make("uniform").load_state_dict(state)
    with pytest.raises(ValueError, match="batch_size"):
        ImportanceSampler(range(N), BATCH + 1, "impact", **OPTS).load_state_dict(state)
    with pytest.raises(ValueError, match="num_samples"):
        ImportanceSampler(range(N + 1), BATCH, "impact", **OPTS).load_state_dict(state)


class PlanItems:
    """Dataset reading whole plans: the way ImpactDataset consumes BatchPlans."""

    def __len__(self):
        return N

    def __getitem__(self, i):
        return torch.tensor(float(i)), i

    def __getitems__(self, plan):
        return [self[i] for i in plan]


def _loop(loader, sampler, epochs, stop=None):
    out = []
    for e in epochs:
        sampler.set_epoch(e)
        for k, (x, idx) in enumerate(loader):
            out.append((e, idx.tolist()))
            sampler.update(idx, torch.as_tensor(_loss(idx.numpy(), e)))
            if stop == (e, k):
                return out, loader.state_dict()
    return out, None


@pytest.mark.filterwarnings("ignore:'set_vital' is deprecated")
@pytest.mark.parametrize("workers", [0, 2])
def test_stateful_dataloader_resume(workers):
    # With workers the loader snapshots the sampler when it requests a batch, ahead of
    # the training loop; the table in the saved state must still hold every loss
    # reported before the checkpoint, or later epochs would be planned differently.
    def make():
        s = _make("impact")
        kw = dict(num_workers=workers)
        if workers:
            kw["multiprocessing_context"] = "fork"
        return s, StatefulDataLoader(PlanItems(), batch_sampler=s, **kw)

    s, dl = make()
    full, _ = _loop(dl, s, range(EPOCHS))
    s, dl = make()
    head, state = _loop(dl, s, range(EPOCHS), stop=(2, 3))
    s2, dl2 = make()
    dl2.load_state_dict(state)
    tail, _ = _loop(dl2, s2, range(2, EPOCHS))
    assert head + tail == full
