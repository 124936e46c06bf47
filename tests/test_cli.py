"""The impact-loader command: convert, inspect, demo, and its errors."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import impact_loader as il
from impact_loader.cli import main


@pytest.mark.parametrize("fmt", ["lmdb", "arrow"])
def test_convert_npy_and_npz(tmp_path, fmt):
    a = np.arange(60, dtype=np.float32).reshape(20, 3)
    np.save(tmp_path / "a.npy", a)
    assert main(["convert", str(tmp_path / "a.npy"), str(tmp_path / "o1"), "--format", fmt,
                 "--quiet"]) == 0
    src = il.LMDBSource(str(tmp_path / "o1")) if fmt == "lmdb" else il.ArrowSource(
        str(tmp_path / "o1"))
    assert len(src) == 20
    np.testing.assert_array_equal(src.decode(src.read_many([7])[0])["x"], a[7])

    np.savez(tmp_path / "b.npz", img=np.ones((5, 2, 2), np.uint8), label=np.arange(5))
    assert main(["convert", str(tmp_path / "b.npz"), str(tmp_path / "o2"), "--format", fmt,
                 "--quiet"]) == 0
    src = il.LMDBSource(str(tmp_path / "o2")) if fmt == "lmdb" else il.ArrowSource(
        str(tmp_path / "o2"))
    got = src.decode(src.read_many([4])[0])
    assert got["label"] == 4 and got["img"].shape == (2, 2)


def test_convert_class_folders(tmp_path):
    root = tmp_path / "imgs"
    for c in ("cat", "dog"):
        (root / c).mkdir(parents=True)
        for k in range(3):
            (root / c / f"{k}.jpg").write_bytes(f"{c}{k}".encode() * 10)
    assert main(["convert", str(root), str(tmp_path / "o"), "--quiet"]) == 0
    src = il.LMDBSource(str(tmp_path / "o"))
    got = [src.decode(r) for r in src.read_many(range(6))]
    assert [g["label"] for g in got] == [0, 0, 0, 1, 1, 1]
    assert got[4]["data"] == b"dog1" * 10 and got[4]["path"] == "dog/1.jpg"


def test_convert_parquet_with_struct_and_list(tmp_path):
    table = pa.table({"feat": [[1.0, 2.0], [3.0, 4.0]], "label": [0, 1],
                      "meta": [{"w": 1, "h": 2}, {"w": 3, "h": 4}]})
    pq.write_table(table, tmp_path / "t.parquet")
    assert main(["convert", str(tmp_path / "t.parquet"), str(tmp_path / "o"), "--quiet"]) == 0
    src = il.LMDBSource(str(tmp_path / "o"))
    got = src.decode(src.read_many([1])[0])
    assert got["meta.w"] == 3 and got["label"] == 1
    np.testing.assert_array_equal(got["feat"], [3.0, 4.0])


def test_inspect_text_and_json(tmp_path, capsys):
    il.write_lmdb(str(tmp_path / "d"), ({"x": np.zeros(8, np.float32), "y": i} for i in range(30)))
    assert main(["inspect", str(tmp_path / "d")]) == 0
    out = capsys.readouterr().out
    assert "samples:       30" in out and "array float32 shape [8]" in out
    assert main(["inspect", str(tmp_path / "d"), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["format"] == "lmdb" and info["samples"] == 30
    assert info["fields"]["y"] == "int"


def test_errors_are_one_line_with_exit_code_2(tmp_path, capsys):
    assert main(["inspect", str(tmp_path / "missing")]) == 2
    assert "does not exist" in capsys.readouterr().err
    (tmp_path / "x.txt").write_text("hello")
    assert main(["convert", str(tmp_path / "x.txt"), str(tmp_path / "o")]) == 2
    assert "do not know how to convert" in capsys.readouterr().err
    np.save(tmp_path / "a.npy", np.zeros((2, 2)))
    (tmp_path / "exists").mkdir()
    assert main(["convert", str(tmp_path / "a.npy"), str(tmp_path / "exists"), "--quiet"]) == 2
    assert "overwrite" in capsys.readouterr().err


def test_bad_arguments_and_help():
    with pytest.raises(SystemExit) as e:
        main(["convert", "a", "b", "--rows-per-shard", "-3"])
    assert e.value.code == 2
    out = subprocess.run([sys.executable, "-m", "impact_loader.cli", "convert", "--help"],
                         capture_output=True, text=True, check=True).stdout
    assert "--rows-per-shard" in out and "class" in out


def test_demo_runs_and_checks_every_sample(capsys):
    assert main(["demo", "--samples", "300", "--record-kib", "1"]) == 0
    out = capsys.readouterr().out
    assert "lmdb via nfs profile" in out and "arrow" in out
