"""Accuracy benchmark (impact-bench accuracy): quick runs, result structure, table, CLI."""

from __future__ import annotations

import argparse
import json
import math

import pytest
import torch

pytest.importorskip("sklearn")

from impact_loader.bench import accuracy as acc  # noqa: E402
from impact_loader.bench import accuracy_cli as acc_cli  # noqa: E402

SEEDS = (0, 1)


@pytest.fixture(scope="module")
def result():
    return acc.run_accuracy(quick=True, seeds=SEEDS, progress=False)


def test_quick_run_covers_every_dataset_policy_and_seed(result):
    epochs = result["options"]["epochs"]
    assert result["options"]["quick"] is True
    assert {(r["dataset"], r["policy"], r["seed"]) for r in result["runs"]} == {
        (d, p, s) for d in acc.DATASETS for p in ("uniform", "impact") for s in SEEDS}
    for run in result["runs"]:
        assert [e["epoch"] for e in run["epochs"]] == list(range(epochs))
        for e in run["epochs"]:
            assert 0.0 <= e["test_accuracy"] <= 1.0
            assert e["seconds"] > 0 and e["delivered"] > 0
            assert math.isfinite(e["train_loss"])
        assert run["final_accuracy"] == run["epochs"][-1]["test_accuracy"]
    for name in acc.DATASETS:
        info = result["datasets"][name]
        assert info["train_samples"] > 0 and info["test_samples"] > 0
        assert info["features"] == 64 and info["classes"] == 10
    json.loads(json.dumps(result))  # JSON-serialisable as is


def test_policies_differ_as_designed(result):
    """Uniform visits every sample every epoch; impact warms up, then trains on less."""
    warmup = result["options"]["sampling_config"]["warmup_epochs"]
    assert result["options"]["epochs"] > warmup  # quick mode still exercises selection
    for run in result["runs"]:
        n = result["datasets"][run["dataset"]]["train_samples"]
        kinds = [e["kind"] for e in run["epochs"]]
        if run["policy"] == "uniform":
            assert set(kinds) == {"full"}
            assert all(e["delivered"] == n for e in run["epochs"])
            assert run["trained_fraction"] == 1.0
        else:
            assert kinds[:warmup] == ["warmup"] * warmup
            assert "select" in kinds[warmup:]
            assert run["trained_fraction"] < 1.0


def test_summary_matches_the_runs(result):
    rows = {(r["dataset"], r["policy"]): r for r in result["summary"]}
    assert set(rows) == {(d, p) for d in acc.DATASETS for p in ("uniform", "impact")}
    for (d, p), row in rows.items():
        acc_runs = [r["final_accuracy"] for r in result["runs"]
                    if r["dataset"] == d and r["policy"] == p]
        assert row["accuracy_mean"] == pytest.approx(sum(acc_runs) / len(acc_runs))
        assert row["accuracy_min"] == min(acc_runs) and row["accuracy_max"] == max(acc_runs)
        assert row["accuracy_std"] >= 0 and row["seconds_per_epoch"] > 0
        if p == "uniform":
            assert row["minus_uniform_points"] is None
        else:
            want = 100 * (row["accuracy_mean"] - rows[(d, "uniform")]["accuracy_mean"])
            assert row["minus_uniform_points"] == pytest.approx(want)


def test_digits_accuracy_well_above_chance(result):
    # Chance is 10%; quick runs reach about 91-94% (full runs about 97%).
    for row in result["summary"]:
        if row["dataset"] == "digits":
            assert row["accuracy_min"] > 0.80, row


def test_same_seed_same_initial_model(result):
    by_seed = {}
    for run in result["runs"]:
        by_seed.setdefault((run["dataset"], run["seed"]), set()).add(run["initial_model"])
    assert all(len(prints) == 1 for prints in by_seed.values())  # policies share it
    for name in acc.DATASETS:
        assert len({next(iter(by_seed[(name, s)])) for s in SEEDS}) == len(SEEDS)


def test_make_model_is_seeded_and_leaves_the_global_rng_alone():
    state = torch.random.get_rng_state()
    a, b, c = acc.make_model(3), acc.make_model(3), acc.make_model(4)
    assert torch.equal(state, torch.random.get_rng_state())
    for pa, pb, pc in zip(a.parameters(), b.parameters(), c.parameters()):
        assert torch.equal(pa, pb) and not torch.equal(pa, pc)


def test_table_mentions_every_dataset_and_policy(result):
    lines = acc.format_table(result).splitlines()
    for row in result["summary"]:
        line = next(ln for ln in lines if ln.split()[:2] == [row["dataset"], row["policy"]])
        assert f"{100 * row['accuracy_mean']:.2f}" in line
        if row["policy"] == "impact":
            assert f"{row['minus_uniform_points']:+.2f} pts" in line
    assert any(ln.startswith("target on digits") for ln in lines)


@pytest.mark.parametrize("kwargs, match", [
    ({"datasets": ["mnist"]}, "'mnist' is unknown"),
    ({"policies": ["fastest"]}, "'fastest' is unknown"),
    ({"seeds": [-1]}, "seed -1"),
    ({"epochs": 0}, "epochs=0"),
    ({"cache_fraction": 1.5}, "cache_fraction=1.5"),
    ({"seeds": []}, "at least one"),
])
def test_bad_arguments_name_the_value(kwargs, match):
    with pytest.raises(ValueError, match=match):
        acc.run_accuracy(progress=False, **kwargs)


def _parser():
    parser = argparse.ArgumentParser(prog="impact-bench accuracy")
    acc_cli.add_arguments(parser)
    return parser


def test_command_line_runs_and_prints_the_table(capsys):
    args = _parser().parse_args(["--quick", "--datasets", "digits", "--seeds", "0",
                                 "--epochs", "2", "--quiet"])
    out = acc_cli.main(args)
    printed = capsys.readouterr().out
    assert [(r["dataset"], r["policy"]) for r in out["summary"]] == [
        ("digits", "uniform"), ("digits", "impact")]
    assert out["options"]["epochs"] == 2
    assert "digits     uniform" in printed and "digits     impact" in printed


@pytest.mark.parametrize("argv, message", [
    (["--seeds", "0,x"], "comma-separated ints >= 0"),
    (["--datasets", "digits,mnist"], "from digits,synthetic"),
    (["--policies", "fastest"], "impact"),
    (["--epochs", "0"], "must be >= 1"),
    (["--cache-fraction", "2"], "<= 1"),
    (["--lr", "0"], "must be > 0"),
])
def test_command_line_rejects_bad_values(argv, message, capsys):
    with pytest.raises(SystemExit):
        _parser().parse_args(argv)
    assert message in capsys.readouterr().err


def test_command_line_documents_every_option():
    text = _parser().format_help()
    for option in ("--epochs", "--batch-size", "--cache-fraction", "--synthetic-samples",
                   "--workers", "--lr", "--quick"):
        assert option in text
