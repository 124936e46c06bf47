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


@pytest.mark.slow
def test_ddp_ranks_split_the_selection_and_learn(example):
    res = example("ddp_train").main(["--fast"])
    ranks = res["ranks"]
    assert [(r["rank"], r["world_size"]) for r in ranks] == [(0, 2), (1, 2)]
    n = res["train_samples"]
    assert ranks[0]["selected"] == ranks[1]["selected"]  # one global plan
    assert ranks[0]["selected"][0] == n  # warm-up epoch: the whole training set
    assert ranks[0]["selected"][-1] < n  # then importance selection trains on less
    for e, m in enumerate(ranks[0]["selected"]):
        a, b = ranks[0]["shares"][e], ranks[1]["shares"][e]
        # Equal shares, padded like DistributedSampler to a multiple of the world size
        # (m = 719 needs one padding entry), that together cover every selected
        # sample, so they overlap only by the padding.
        assert len(a) == len(b) == -(-m // 2)
        assert len(set(a) | set(b)) == m
    for r in ranks:
        # Delivered = planned, except where the rank's cache substituted a sample.
        changed = 0
        for share, got in zip(r["shares"], r["delivered"]):
            assert len(got) == len(share)
            assert all(0 <= i < n for i in got)
            changed += sum(p != g for p, g in zip(share, got))
        assert changed == r["substitutions"]
        assert r["hits"] + r["substitutions"] > 0
        # Losses merged (all-gathered) at every epoch change.
        assert r["syncs"] >= len(r["shares"]) - 1
    # DDP keeps the replicas identical, so both ranks measure the same accuracy.
    assert ranks[0]["accuracy"] == ranks[1]["accuracy"]
    assert res["test_accuracy"] > 0.8  # chance is 0.1; about 0.9 with seed 0


@pytest.mark.slow
def test_foreign_lmdb_delivers_the_bytes_written_under_each_key(example, tmp_path):
    import lmdb

    res = example("foreign_lmdb").main(["--fast", "--data", str(tmp_path)])
    assert res["length"] == res["samples"] == 600  # length_key, not the entry count
    assert res["delivered"] >= res["samples"]  # a full warm-up epoch, then selection
    assert res["distinct"] > res["samples"] // 2
    assert res["mismatches"] == 0
    assert res["hits"] + res["substitutions"] > 0
    # The database really is foreign: ASCII keys, a __len__ entry, no impact metadata.
    env = lmdb.open(str(tmp_path / "foreign.lmdb"), readonly=True, lock=False)
    with env.begin() as txn:
        keys = [k for k, _ in txn.cursor()]
        assert txn.get(b"__len__") == b"600"
        assert txn.get(b"__impact_meta__") is None
        value = txn.get(b"00000042")
    env.close()
    assert len(keys) == 601 and keys[0] == b"00000000" and keys[-2] == b"00000599"
    assert len(value) == 8 + 64


@pytest.mark.slow
def test_hf_arrow_trains_from_stream_shards_and_delivers_the_rows(example, tmp_path):
    import pyarrow as pa

    res = example("hf_arrow").main(["--fast", "--writer-batch-size", "256",
                                    "--data", str(tmp_path)])
    assert res["mismatches"] == 0
    assert res["delivered"] >= res["train_rows"]  # the warm-up epoch sees every row
    assert res["test_accuracy"] > 0.8  # chance is 0.1; about 0.9 with seed 0
    assert res["hits"] + res["substitutions"] > 0
    names = [os.path.basename(f) for f in res["files"]]
    assert names == ["data-00000-of-00002.arrow", "data-00001-of-00002.arrow"]
    # What was written is what datasets writes: IPC streams (no file magic) in
    # record batches of at most writer_batch_size rows, features in the metadata.
    rows = 0
    for path in res["files"]:
        with open(path, "rb") as fh:
            assert fh.read(6) != b"ARROW1"
        with pa.OSFile(path, "rb") as fh:
            reader = pa.ipc.open_stream(fh)
            assert b"huggingface" in reader.schema.metadata
            sizes = [b.num_rows for b in reader]
        assert len(sizes) > 1 and max(sizes) == 256
        rows += sum(sizes)
    assert rows == res["train_rows"] and res["test_rows"] > 0
    assert (tmp_path / "train" / "state.json").is_file()
