"""The README's code blocks run as written (on small data)."""

from __future__ import annotations

import os
import re

import numpy as np

import impact_loader as il

README = os.path.join(os.path.dirname(__file__), os.pardir, "README.md")


def _blocks():
    with open(README) as fh:
        return re.findall(r"```python\n(.*?)```", fh.read(), re.S)


def test_storage_and_training_examples_run(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    storage, training = _blocks()[:2]
    exec(compile(storage, "README storage", "exec"), {})
    il.write_lmdb("train.lmdb", ({"x": np.random.rand(64).astype(np.float32),
                                  "label": i % 10} for i in range(600)), overwrite=True)
    fast = training.replace("range(10)", "range(2)").replace("512 * 2**20", "2**18")
    fast = fast.replace('profile="nfs"', 'latency_ms=0.1, bandwidth_mb_s=1000, '
                        'max_inflight=8')
    exec(compile(fast, "README training", "exec"), {})
