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
