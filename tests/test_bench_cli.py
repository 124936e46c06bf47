"""impact-bench: runs end to end on tiny data, writes its outputs, rejects bad options.

No timing is asserted (speed is measured by running the benchmark, not in unit tests):
only that every loader produces a row of finite figures whose counts add up.
"""

from __future__ import annotations

import json
import math
import time

import numpy as np
import pytest

import impact_loader as il
from impact_loader.bench.cli import main
from impact_loader.bench.loaders import LOADERS
from impact_loader.bench.task import fastest_rate

FINITE = ("median_epoch_s", "samples_per_s", "hit_ratio", "substitution_ratio",
          "requests_per_epoch", "mb_per_epoch", "data_wait_share", "bound_s",
          "ratio_to_bound")
TINY = ["--samples", "384", "--batch-size", "64", "--epochs", "2", "--warmup", "1",
        "--test-samples", "64", "--workers", "0", "--quiet"]


def _run(tmp_path, *extra):
    out = tmp_path / "r.json"
    code = main([*TINY, "--data-dir", str(tmp_path / "data"), "--json", str(out), *extra])
    assert code == 0
    return json.loads(out.read_text())


def test_builtin_run_has_every_loader_and_writes_json_and_plot(tmp_path, capsys):
    png = tmp_path / "r.png"
    report = _run(tmp_path, "--latency-ms", "0.5", "--plot", str(png))
    printed = capsys.readouterr().out
    (run,) = report["runs"]
    assert [r["loader"] for r in run["rows"]] == list(LOADERS)
    for r in run["rows"]:
        for key in FINITE:
            assert math.isfinite(r[key]), (r["loader"], key, r[key])
        assert 0 <= r["hit_ratio"] + r["substitution_ratio"] <= 1
        assert r["loader"] in printed
        assert 0 <= r["test_accuracy"] <= 1
    by = {r["loader"]: r for r in run["rows"]}
    # The baseline reads every sample of every epoch, one request each.
    plain = by["plain"]
    assert plain["requests_per_epoch"] == 384 and plain["hit_ratio"] == 0
    assert by["quiver"]["substitution_ratio"] > 0  # substitution really happens
    assert by["plain"]["speedup_vs_plain"] == 1
    # Bookkeeping is CPU: the pipeline's threads plus update()'s CPU, not update()'s
    # wall time (which also holds its waits for the GIL).
    imp, measured = by["impact"], by["impact"]["epochs"][1:]  # --warmup 1
    cpu = sum(e["bookkeeping_cpu_s"] + e["update_cpu_s"] for e in measured)
    delivered = sum(e["delivered"] for e in measured)
    assert imp["bookkeeping_us_per_sample"] == pytest.approx(1e6 * cpu / delivered)
    assert all(0 < e["update_cpu_s"] <= e["update_s"] + 1e-3 for e in measured)
    assert report["scenario"]["storage"]["latency_ms"] == 0.5
    assert report["environment"]["cpu_count"] >= 1
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "targets of impact-loader's default" in printed


def test_cache_fraction_sweep_grows_minio_hits(tmp_path):
    png = tmp_path / "sweep.png"
    report = _run(tmp_path, "--storage", "local", "--loaders", "minio,impact",
                  "--samples", "1024", "--cache-fraction", "0.2,0.6", "--plot", str(png))
    low, high = report["runs"]
    assert (low["cache_fraction"], high["cache_fraction"]) == (0.2, 0.6)
    assert high["cache_bytes"] > low["cache_bytes"]
    minio = [run["rows"][0] for run in report["runs"]]
    assert minio[1]["hit_ratio"] > minio[0]["hit_ratio"]
    assert png.stat().st_size > 1000
    # The compute term is measured before the runs and after each fraction's epochs;
    # the bound uses the fastest measurement.
    measured = report["compute_measurements"]
    assert len(measured) == 3 and report["compute_samples_per_s"] == max(measured)


def test_compute_rate_is_the_fastest_round():
    """A stall during one timed round does not lower the measured rate."""
    calls = []

    def step():
        calls.append(None)
        time.sleep(0.2 if len(calls) in (3, 4) else 0.001)  # round 1 stalls

    rate = fastest_rate(step, 10, steps=8, warm=2, rounds=4)
    assert len(calls) == 10
    # The fastest round is 2 steps of ~1 ms (~9,000/s). The mean over all 8 steps would
    # be under 80 / 0.4 = 200/s; 1,000/s leaves room for a slow host's sleeps.
    assert rate > 1000


def _foreign_samples(n):
    rng = np.random.default_rng(1)
    for i in range(n):
        yield {"pixels": rng.integers(0, 255, 300 + i % 7, dtype=np.uint8),
               "caption": f"sample {i}", "label": i % 3}


@pytest.mark.parametrize("fmt,storage", [("lmdb", "cold"), ("arrow", "local")])
def test_own_data_runs_a_stand_in_task(tmp_path, fmt, storage):
    path = str(tmp_path / f"own.{fmt}")
    writer = il.write_lmdb if fmt == "lmdb" else il.write_arrow
    writer(path, _foreign_samples(300)).close()
    report = _run(tmp_path, "--source", path, "--storage", storage, "--loaders",
                  "plain,lru,impact", "--compute-ms", "0")
    (run,) = report["runs"]
    assert report["samples"] == 300
    for r in run["rows"]:
        assert math.isnan(r["test_accuracy"])  # no model: accuracy is not defined
        assert sum(e["delivered"] for e in r["epochs"]) > 0
        assert r["bound_terms"][0]["bandwidth"] == 0  # real storage: compute-only bound


@pytest.mark.parametrize("argv,message", [
    (["--loaders", "plain,nope"], "nope"),
    (["--cache-fraction", "0"], "(0, 2]"),
    (["--cache-fraction", "x"], "comma-separated"),
    (["--epochs", "2", "--warmup", "2"], "must exceed --warmup"),
    (["--source", "/nonexistent/data.lmdb"], "does not exist"),
    (["--storage", "local", "--latency-ms", "3"], "emulated profile"),
    (["--storage", "floppy"], "invalid choice"),
    (["--batch-size", "0"], ">= 1"),
    (["--samples", "300", "--batch-size", "512"], "at least --batch-size"),
])
def test_bad_options_are_usage_errors(capsys, argv, message):
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 2
    assert message in capsys.readouterr().err


def test_corrupt_source_is_a_clear_error(tmp_path, capsys):
    bad = tmp_path / "bad.lmdb"
    bad.mkdir()
    (bad / "data.mdb").write_bytes(b"not an lmdb" * 10)
    assert main([*TINY, "--source", str(bad)]) == 2
    assert "impact-bench: error" in capsys.readouterr().err


def test_help_explains_units(capsys):
    with pytest.raises(SystemExit):
        main(["--help"])
    text = " ".join(capsys.readouterr().out.split())  # undo line wrapping
    for phrase in ("milliseconds", "megabytes per second", "share of the dataset's bytes",
                   "quiver", "accuracy"):
        assert phrase in text
