"""Every script in examples/ runs in its fast mode and does what its README paragraph says.

The metrics dashboard example (examples/metrics_training.py) is exercised in
test_metrics.py. Each example is imported from the examples directory (on ``sys.path``
for the test, so spawned processes can import it too) and its ``main(argv)`` called.
"""

from __future__ import annotations

import importlib
import os
import sys

import pytest

EXAMPLES = os.path.join(os.path.dirname(os.path.abspath(__file__)), os.pardir, "examples")
EXAMPLES = os.path.normpath(EXAMPLES)


@pytest.fixture
def example(monkeypatch):
    """Import an example script as a module by file name (without ``.py``)."""
    monkeypatch.syspath_prepend(EXAMPLES)

    def load(name):
        sys.modules.pop(name, None)
        return importlib.import_module(name)

    return load


@pytest.mark.slow
def test_train_digits_learns_and_hits_the_cache(example, tmp_path):
    res = example("train_digits").main(["--fast", "--data", str(tmp_path)])
    # Chance is 0.1; the fast run reaches about 0.93 with seed 0.
    assert res["test_accuracy"] > 0.8
    assert len(res["accuracy_per_epoch"]) == 4
    assert res["hits"] > 0 and res["substitutions"] >= 0
    assert 0 < res["hit_ratio"] <= 1
    # Warm-up epoch over every training sample, then impact selection trains on less.
    assert res["samples_trained"] >= res["train_samples"]
    assert res["planned"] == res["samples_trained"]
    assert os.path.isfile(tmp_path / "digits-train.lmdb" / "data.mdb")


def test_train_digits_help_and_bad_arguments(example, capsys):
    mod = example("train_digits")
    with pytest.raises(SystemExit):
        mod.main(["--help"])
    out = capsys.readouterr().out
    for option in ("--storage", "--policy", "--workers", "--cache-fraction", "--fast"):
        assert option in out
    with pytest.raises(SystemExit) as exc:
        mod.main(["--cache-fraction", "2"])
    assert exc.value.code == 2
    assert "--cache-fraction 2.0 must be in [0, 1]" in capsys.readouterr().err
