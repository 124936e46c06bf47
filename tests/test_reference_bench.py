"""Smoke test of benchmarks/reference.py: it runs end to end on tiny data.

No timing is asserted (timing is measured in benchmarks, never asserted in a unit test):
only that every loader of both scenarios produces a row of finite figures.
"""

from __future__ import annotations

import importlib.util
import json
import math
import os

import pytest

BENCH = os.path.join(os.path.dirname(__file__), os.pardir, "benchmarks", "reference.py")
ROW_FIGURES = ("median_epoch_s", "samples_per_s", "speedup_vs_plain", "hit_ratio",
               "substitution_ratio", "requests_main_per_epoch",
               "requests_workers_per_epoch", "mb_main_per_epoch", "mb_workers_per_epoch",
               "data_wait_share", "bound_s", "ratio_to_bound", "test_accuracy")


def _load():
    spec = importlib.util.spec_from_file_location("reference_bench", BENCH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_quick_run_produces_every_row(tmp_path, capsys):
    bench = _load()
    out = tmp_path / "r.json"
    report = bench.main(["--quick", "--easy", "--samples", "384", "--epochs", "2",
                         "--warmup", "1", "--test-samples", "64", "--latency-ms", "0.5",
                         "--data-dir", str(tmp_path / "data"), "--json", str(out)])
    for scenario in ("reference", "easy"):
        rows = report[scenario]
        assert [r["loader"] for r in rows] == list(bench.LOADERS)
        for r in rows:
            for key in ROW_FIGURES:
                assert math.isfinite(r[key]), (scenario, r["loader"], key, r[key])
            assert len(r["epoch_seconds"]) == 2
            assert all(f > 0 for f in r["trained_fraction"])
    assert json.loads(out.read_text())["reference"][0]["loader"] == "plain"
    printed = capsys.readouterr().out
    assert "REFERENCE (I/O-bound)" in printed and "EASY (not I/O-bound)" in printed


def test_bad_loader_name_is_a_usage_error(capsys):
    bench = _load()
    with pytest.raises(SystemExit) as exc:
        bench.parse_args(["--loaders", "plain,nope"])
    assert exc.value.code == 2
    assert "nope" in capsys.readouterr().err
