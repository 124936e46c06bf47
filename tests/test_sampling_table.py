"""ImportanceTable: EMA, prior, staleness, ranks, window, validation; model-checked."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from impact_loader.sampling import ImportanceTable


def test_first_loss_is_taken_as_is_then_ema():
    t = ImportanceTable(4, ema_weight=0.5)
    t.update([1], [2.0], epoch=0)
    assert t.score[1] == 2.0
    t.update([1], [4.0], epoch=1)
    assert t.score[1] == pytest.approx(3.0)
    assert t.last_epoch.tolist() == [-1, 1, -1, -1]
    assert t.scored.tolist() == [False, True, False, False]


def test_prior_is_mean_of_scored_or_configured():
    t = ImportanceTable(4)
    assert t.prior_value() == 1.0
    assert t.importance().tolist() == [1.0] * 4
    t.update([0, 1], [2.0, 4.0], epoch=0)
    assert t.importance().tolist() == [2.0, 4.0, 3.0, 3.0]
    fixed = ImportanceTable(3, prior=0.25)
    fixed.update([0], [5.0], epoch=0)
    assert fixed.importance().tolist() == [5.0, 0.25, 0.25]


def test_importance_is_one_read_only_array_until_the_table_changes():
    t = ImportanceTable(4)
    imp = t.importance()
    assert t.importance() is imp and not imp.flags.writeable and imp.dtype == np.float32
    with pytest.raises(ValueError):
        imp[0] = 5.0
    t.update([0, 1], [2.0, 4.0], epoch=0)
    assert imp.tolist() == [1.0] * 4  # what the holder had is not rewritten
    assert t.importance() is not imp and t.importance().tolist() == [2.0, 4.0, 3.0, 3.0]
    exact = t.importance_exact()
    assert exact.dtype == np.float64 and exact.flags.writeable and exact.tolist() == [2, 4, 3, 3]
    t.update(np.zeros(0, np.int64), np.zeros(0), epoch=1)  # an empty report changes nothing
    assert t.importance() is t.importance()
    state = ImportanceTable(4)
    state.update([3], [8.0], epoch=0)
    before = t.importance()
    t.load_state_dict(state.state_dict())
    assert t.importance() is not before and t.importance().tolist() == [8.0] * 4


def test_duplicates_in_one_call_are_averaged_in_any_order():
    a, b = ImportanceTable(3, ema_weight=0.5), ImportanceTable(3, ema_weight=0.5)
    for t in (a, b):
        t.update([0], [1.0], epoch=0)
    a.update([0, 2, 0], [3.0, 1.0, 5.0], epoch=1)
    b.update([0, 0, 2], [5.0, 3.0, 1.0], epoch=1)
    np.testing.assert_array_equal(a.score, b.score)
    assert a.score[0] == pytest.approx(0.5 * 1.0 + 0.5 * 4.0)


def test_staleness_ranks_percentiles():
    t = ImportanceTable(4)
    t.update([0, 1, 2], [3.0, 1.0, 2.0], epoch=2)
    t.update([1], [1.0], epoch=5)
    assert t.staleness(6).tolist() == [4, 1, 4, 7]
    # sample 3 unseen -> prior = mean(3, 1, 2) = 2; ties broken by index
    assert t.ranks().tolist() == [3, 0, 1, 2]
    assert t.percentiles().max() == 1.0 and t.percentiles().min() == 0.0


def test_window_keeps_most_recent_losses():
    t = ImportanceTable(10, window=4)
    t.update([0, 1, 2], [1.0, 2.0, 3.0], epoch=0)
    assert t.recent_losses().tolist() == [1.0, 2.0, 3.0]
    t.update([3, 4], [4.0, 5.0], epoch=0)
    assert sorted(t.recent_losses().tolist()) == [2.0, 3.0, 4.0, 5.0]
    t.update(list(range(6)), [9.0, 8, 7, 6, 5, 4], epoch=0)
    assert sorted(t.recent_losses().tolist()) == [4.0, 5.0, 6.0, 7.0]


@pytest.mark.parametrize("indices, losses, exc, words", [
    ([0, 1], [1.0, float("nan")], ValueError, ["non-finite", "[1]", "nonfinite='skip'"]),
    ([3, 1], [float("inf"), 1.0], ValueError, ["non-finite", "[3]"]),
    ([0, 1], [1.0], ValueError, ["1 losses for 2 indices", "reduction='none'"]),
    ([0, 10], [1.0, 1.0], IndexError, ["[10]", "[0, 10)"]),
    ([-1], [1.0], IndexError, ["[-1]"]),
    ([0.5], [1.0], TypeError, ["integers"]),
    ([2], [-0.5], ValueError, [">= 0", "[2]"]),
])
def test_bad_reports_name_the_problem(indices, losses, exc, words):
    t = ImportanceTable(10)
    with pytest.raises(exc) as info:
        t.update(np.array(indices), np.array(losses), epoch=0)
    for w in words:
        assert w in str(info.value)
    assert not t.scored.any()  # nothing applied


def test_skip_drops_nonfinite_and_counts():
    t = ImportanceTable(5)
    skipped = t.update([0, 1, 2], [1.0, np.nan, np.inf], epoch=0, nonfinite="skip")
    assert skipped == 2
    assert t.scored.tolist() == [True, False, False, False, False]


def test_state_roundtrip_and_mismatch():
    t = ImportanceTable(6, window=3)
    t.update([1, 2, 5], [0.5, 1.5, 2.5], epoch=3)
    u = ImportanceTable(6, window=3)
    u.load_state_dict(t.state_dict())
    for k in ("score", "scored", "last_epoch"):
        np.testing.assert_array_equal(getattr(t, k), getattr(u, k))
    np.testing.assert_array_equal(t.recent_losses(), u.recent_losses())
    with pytest.raises(ValueError, match="6 samples"):
        ImportanceTable(7, window=3).load_state_dict(t.state_dict())


_reports = st.lists(st.tuples(
    st.lists(st.tuples(st.integers(0, 11), st.floats(0, 100)), min_size=0, max_size=20),
    st.integers(0, 5)), max_size=12)


@settings(max_examples=60, deadline=None)
@given(_reports, st.sampled_from([0.1, 0.5, 1.0]), st.integers(1, 8))
def test_table_matches_reference_model(reports, weight, window):
    n = 12
    t = ImportanceTable(n, ema_weight=weight, window=window)
    score, last, history = {}, {}, []
    for pairs, epoch in reports:
        idx = np.array([p[0] for p in pairs], dtype=np.int64)
        loss = np.array([p[1] for p in pairs], dtype=np.float64)
        t.update(idx, loss, epoch=epoch)
        groups = {}
        for i, l in pairs:
            groups.setdefault(i, []).append(l)
        for i, ls in groups.items():
            mean = sum(ls) / len(ls)
            score[i] = mean if i not in score else score[i] + weight * (mean - score[i])
            last[i] = epoch
        history.extend(loss.tolist())
    for i in range(n):
        assert t.scored[i] == (i in score)
        assert t.last_epoch[i] == last.get(i, -1)
        if i in score:
            assert t.score[i] == pytest.approx(score[i], rel=1e-9, abs=1e-9)
    assert sorted(t.recent_losses().tolist()) == sorted(history[-window:] if history else [])
    ranks = t.ranks()
    assert sorted(ranks.tolist()) == list(range(n))
    imp = t.importance()
    assert np.all(np.diff(imp[np.argsort(ranks)]) >= 0)
