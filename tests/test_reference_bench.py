"""Smoke test of benchmarks/reference.py: the reference scenario's defaults reach the engine.

No timing is asserted (timing is measured in benchmarks, never asserted in a unit test).
"""

from __future__ import annotations

import importlib.util
import json
import os

import pytest

BENCHMARKS = os.path.join(os.path.dirname(__file__), os.pardir, "benchmarks")


def _load(script: str = "reference"):
    """The module of ``benchmarks/<script>.py``."""
    spec = importlib.util.spec_from_file_location(f"bench_{script}",
                                                  os.path.join(BENCHMARKS, f"{script}.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_quick_easy_run_writes_both_reports(tmp_path):
    bench = _load()
    out = tmp_path / "r.json"
    code = bench.main(["--quick", "--easy", "--samples", "384", "--epochs", "2",
                       "--test-samples", "64", "--latency-ms", "0.5", "--quiet",
                       "--data-dir", str(tmp_path / "data"), "--json", str(out)])
    assert code == 0
    ref = json.loads(out.read_text())
    easy = json.loads((tmp_path / "r-easy.json").read_text())
    assert [r["loader"] for r in ref["runs"][0]["rows"]] == ["plain", "lru", "minio",
                                                             "impact"]
    assert ref["scenario"]["storage"]["latency_ms"] == 0.5
    assert ref["runs"][0]["cache_fraction"] == 0.2
    assert easy["scenario"]["storage"]["name"] == "local"
    assert easy["runs"][0]["cache_fraction"] == 1.05
    assert ref["samples"] == easy["samples"] == 384


def test_step_contention_measures_every_competitor():
    rows = _load("step_contention").measure(steps=3, batch_size=16, intervals_ms=[0.1])
    per_threads = {}
    for threads, what, ms, alone in rows:
        assert ms > 0 and alone > 0
        per_threads.setdefault(threads, []).append(what)
    assert 1 in per_threads
    for names in per_threads.values():
        assert names == ["alone", "a busy Python thread, switch interval 0.1 ms",
                         "1 busy process", "2 busy processes"]
    assert not __import__("multiprocessing").active_children()  # spinners stopped


@pytest.mark.parametrize("args, named", [(["--steps", "0"], "'0'"),
                                         (["--intervals-ms", "5,x"], "'5,x'"),
                                         (["--intervals-ms", "-1"], "'-1'")])
def test_step_contention_rejects_bad_arguments(args, named, capsys):
    with pytest.raises(SystemExit):
        _load("step_contention").main(args)
    assert named in capsys.readouterr().err


def test_loop_profile_splits_each_iteration(tmp_path, capsys):
    table = _load("loop_profile").main(["--samples", "384", "--epochs", "2", "--skip", "1",
                                        "--latency-ms", "0.5", "--loaders", "plain,impact",
                                        "--data-dir", str(tmp_path)])
    assert list(table) == ["plain", "impact"]
    for name, row in table.items():
        assert row["sleep_ms"] >= 10.0  # the 10 ms accelerator stand-in, timed apart
        assert row["model_ms"] > 0 and row["wait_ms"] > 0
        assert 0.0 <= row["in_pipe"] <= 1.0  # both loaders use 2 workers
        assert row["wait_p90_ms"] >= row["wait_p50_ms"]
        assert 0.0 < row["first4_ms"] <= row["wait_ms"]  # a share of the same waits
    assert table["plain"]["hook_ms"] == 0.0 and table["impact"]["hook_ms"] > 0
    assert table["impact"]["update_ms"] > 0 and table["plain"]["update_ms"] < 0.1
    assert "impact" in capsys.readouterr().out


def test_loop_profile_needs_a_reported_epoch(capsys):
    with pytest.raises(SystemExit):
        _load("loop_profile").main(["--epochs", "2", "--skip", "2"])
    assert "--epochs 2 must exceed --skip 2" in capsys.readouterr().err
