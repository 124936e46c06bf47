"""ArrowSource / write_arrow beyond the shared contract: types, layouts, HF files, errors."""

from __future__ import annotations

import glob
import itertools
import json
import os
import pickle
import shutil

import numpy as np
import pyarrow as pa
import pytest
from hypothesis import given, settings, HealthCheck
from hypothesis import strategies as st

from impact_loader import records
from impact_loader._arrow_rows import ChunkView
from impact_loader._arrow_schema import plan_leaves
from impact_loader.arrow_source import ArrowSource, write_arrow
from impact_loader.errors import (CorruptRecordError, DatasetExistsError,
                                  DatasetNotFoundError, NotADatasetError,
                                  SchemaMismatchError)


def _same(got, want):
    assert list(sorted(got)) == list(sorted(want))
    for k, v in want.items():
        if isinstance(v, (np.ndarray, np.generic)):  # numpy scalars come back 0-d
            v = np.asarray(v)
            assert isinstance(got[k], np.ndarray), k
            assert got[k].dtype == v.dtype and got[k].shape == v.shape, k
            np.testing.assert_array_equal(got[k], v)
        else:
            assert type(got[k]) is type(v) and got[k] == v, k


def _all_types(i):
    rng = np.random.default_rng(i)
    return {
        "i": i - 3, "f": i / 3.0, "b": bool(i % 2), "s": f"ünï-{i}-\u6f22\U0001f600",
        "raw": b"" if i % 3 == 0 else bytes([i % 256]) * i,
        "scalar0d": np.array(i * 1.5, np.float32),
        "int0d": np.int16(i),
        "img": rng.integers(0, 255, size=(3, 4, 2), dtype=np.uint8),
        "half": rng.standard_normal(5).astype(np.float16),
        "mask": rng.integers(0, 2, size=(2, 5)).astype(bool),
        "u64": np.array([2 ** 64 - 1 - i, i], np.uint64),
        "f64": rng.standard_normal((2, 2)),
        "ключ 100%s": i,  # non-ASCII and '%' in a field name
    }


def _read_all(src):
    return src.read_many(np.arange(len(src)))


def test_every_value_type_round_trips_byte_identical(tmp_path):
    samples = [_all_types(i) for i in range(11)]
    src = write_arrow(tmp_path / "d", samples, rows_per_shard=4)
    assert len(src) == 11 and len(src.files()) == 3
    for s, raw in zip(samples, _read_all(src)):
        assert raw == records.encode(s)
        _same(src.decode(raw), s)


def test_varying_shapes_ndims_and_empty_arrays(tmp_path):
    shapes = [(3,), (0,), (2, 5), (1, 0, 2), (), (7,)]
    samples = [{"a": np.arange(int(np.prod(sh)), dtype=np.int32).reshape(sh), "k": j}
               for j, sh in enumerate(shapes)]
    src = write_arrow(tmp_path / "d", samples, rows_per_shard=4)
    for s, raw in zip(samples, _read_all(src)):
        assert raw == records.encode(s)
        _same(src.decode(raw), s)


def test_columns_are_native_arrow_types(tmp_path):
    samples = [_all_types(i) for i in range(4)]
    src = write_arrow(tmp_path / "d", samples, rows_per_shard=10)
    table = pa.ipc.open_file(src.files()[0]).read_all()
    types = {f.name: f.type for f in table.schema}
    assert types["i"] == pa.int64() and types["f"] == pa.float64()
    assert types["b"] == pa.bool_() and types["s"] == pa.string()
    assert types["raw"] == pa.binary() and types["scalar0d"] == pa.float32()
    assert types["img"] == pa.list_(pa.uint8(), 24)
    assert types["half"] == pa.list_(pa.float16(), 5)
    assert table.column("s").to_pylist() == [s["s"] for s in samples]
    assert table.column("img").to_pylist()[1] == samples[1]["img"].reshape(-1).tolist()
    manifest = json.loads((tmp_path / "d" / "impact_loader.json").read_text())
    assert manifest["rows"] == 4 and manifest["format"] == "impact-loader-arrow"


def test_shard_boundaries_glob_list_and_single_file(tmp_path):
    samples = [{"x": np.full(3, i, np.int64), "n": i} for i in range(30)]
    src = write_arrow(tmp_path / "d", samples, rows_per_shard=7)
    files = src.files()
    assert len(files) == 5 and files == sorted(files)
    order = [6, 7, 13, 14, 29, 0, 28, 21, 20, 6]
    assert [src.decode(r)["n"] for r in src.read_many(order)] == order
    by_glob = ArrowSource(str(tmp_path / "d" / "shard-*.arrow"))
    assert len(by_glob) == 30 and by_glob.read_many(order) == src.read_many(order)
    by_list = ArrowSource([files[2], files[0]])  # a list keeps the given order
    assert [by_list.decode(r)["n"] for r in by_list.read_many([0, 6, 7])] == [14, 20, 0]
    single = ArrowSource(files[4])
    assert [single.decode(r)["n"] for r in single.read_many([0, 1])] == [28, 29]


def _hf_stream(path, batches, schema):
    meta = {"info": {"features": {
        "image": {"_type": "Image"},
        "label": {"names": ["cat", "dog", "eel"], "_type": "ClassLabel"},
        "text": {"dtype": "string", "_type": "Value"}}}}
    schema = schema.with_metadata({b"huggingface": json.dumps(meta).encode()})
    with pa.OSFile(str(path), "wb") as sink:
        with pa.ipc.new_stream(sink, schema) as writer:
            for batch in batches:
                writer.write_batch(pa.record_batch(batch, schema=schema))


HF_SCHEMA = pa.schema([
    ("image", pa.struct([("bytes", pa.binary()), ("path", pa.string())])),
    ("label", pa.int64()), ("text", pa.string())])


def _hf_rows(start, n):
    return {
        "image": [{"bytes": b"\x89PNG" + bytes([i % 256]) * i,
                   "path": None if i % 2 else f"img{i}.png"} for i in range(start, start + n)],
        "label": [i % 3 for i in range(start, start + n)],
        "text": [f"caption {i} é" for i in range(start, start + n)],
    }


def test_huggingface_stream_file_struct_classlabel_string(tmp_path):
    _hf_stream(tmp_path / "data-00000-of-00002.arrow",
               [_hf_rows(0, 5), _hf_rows(5, 3)], HF_SCHEMA)
    _hf_stream(tmp_path / "data-00001-of-00002.arrow", [_hf_rows(8, 4)], HF_SCHEMA)
    (tmp_path / "dataset_info.json").write_text("{}")
    src = ArrowSource(tmp_path)
    assert len(src) == 12 and len(src.files()) == 2
    for i, raw in zip([11, 0, 5, 4, 1], src.read_many([11, 0, 5, 4, 1])):
        want = {"image.bytes": b"\x89PNG" + bytes([i]) * i, "label": i % 3,
                "text": f"caption {i} é"}
        if i % 2 == 0:  # a null path is left out of the record
            want["image.path"] = f"img{i}.png"
        _same(src.decode(raw), want)
        assert raw == records.encode({k: want[k] for k in
                                      ["image.bytes", "image.path", "label", "text"]
                                      if k in want})


def test_generic_lists_scalars_and_tensors(tmp_path):
    n = 9
    rng = np.random.default_rng(3)
    vecs = [rng.standard_normal(i % 4).astype(np.float32) for i in range(n)]
    mats = [rng.integers(0, 9, size=(i % 3 + 1, 2)).astype(np.int16) for i in range(n)]
    cube = rng.standard_normal((n, 2, 3))
    tensor_type = pa.fixed_shape_tensor(pa.float64(), [2, 3])
    cols = {
        "vec": pa.array([v.tolist() for v in vecs], pa.large_list(pa.float32())),
        "mat": pa.array([m.tolist() for m in mats], pa.list_(pa.list_(pa.int16()))),
        "fixed2d": pa.array(cube.tolist(), pa.list_(pa.list_(pa.float64(), 3), 2)),
        "tensor": pa.ExtensionArray.from_storage(
            tensor_type, pa.array(cube.reshape(n, 6).tolist(), pa.list_(pa.float64(), 6))),
        "f32": pa.array(np.arange(n, dtype=np.float32)),
        "u8": pa.array(np.arange(n, dtype=np.uint8)),
        "flag": pa.array([i % 3 == 0 for i in range(n)]),
        "bigtext": pa.array([f"t{i}" for i in range(n)], pa.large_string()),
        "fixbin": pa.array([bytes([i, i]) for i in range(n)], pa.binary(2)),
        "nothing": pa.nulls(n),
    }
    table = pa.table(cols)
    with pa.OSFile(str(tmp_path / "t.arrow"), "wb") as sink:
        with pa.ipc.new_stream(sink, table.schema) as w:
            for b in table.to_batches(max_chunksize=4):
                w.write_batch(b)
    src = ArrowSource(tmp_path / "t.arrow")
    for i, raw in enumerate(_read_all(src)):
        _same(src.decode(raw), {
            "vec": vecs[i], "mat": mats[i], "fixed2d": cube[i], "tensor": cube[i],
            "f32": np.array(i, np.float32), "u8": np.array(i, np.uint8),
            "flag": i % 3 == 0, "bigtext": f"t{i}", "fixbin": bytes([i, i])})


def test_nulls_are_left_out_and_null_list_items_refused(tmp_path):
    table = pa.table({"a": pa.array([1, None, 3]), "s": pa.array(["x", None, None]),
                      "v": pa.array([[1.0], None, [2.0, 3.0]])})
    path = tmp_path / "n.arrow"
    with pa.ipc.new_file(str(path), table.schema) as w:
        w.write_table(table)
    src = ArrowSource(path)
    got = [src.decode(r) for r in _read_all(src)]
    assert got[0]["a"] == 1 and got[0]["s"] == "x"
    assert got[1] == {}
    assert set(got[2]) == {"a", "v"}
    np.testing.assert_array_equal(got[2]["v"], [2.0, 3.0])
    bad = pa.table({"v": pa.array([[1.0, None]])})
    with pa.ipc.new_file(str(tmp_path / "bad.arrow"), bad.schema) as w:
        w.write_table(bad)
    with pytest.raises(NotADatasetError, match="fill_null"):
        ArrowSource(tmp_path / "bad.arrow")


def test_sliced_arrays_with_offsets_and_null_structs():
    struct = pa.array([{"p": i, "q": [i, i + 1]} if i != 4 else None for i in range(8)],
                      pa.struct([("p", pa.int32()), ("q", pa.list_(pa.int64(), 2))]))
    batch = pa.record_batch({
        "s": struct, "t": pa.array([f"w{i}" for i in range(8)]),
        "l": pa.array([[True] * i for i in range(8)]),
        "b": pa.array([i % 2 == 0 for i in range(8)])}).slice(3)
    view = ChunkView(batch, plan_leaves(batch.schema, "mem"), "mem")
    recs = [records.decode(r) for r in view.pack(np.arange(5))]
    for j, rec in enumerate(recs):
        i = j + 3
        assert rec["t"] == f"w{i}" and rec["b"] == (i % 2 == 0)
        np.testing.assert_array_equal(rec["l"], np.ones(i, bool))
        if i == 4:
            assert "s.p" not in rec and "s.q" not in rec
        else:
            assert rec["s.p"] == np.int32(i) and rec["s.q"].tolist() == [i, i + 1]


def test_unsupported_column_names_fix_and_columns_selects(tmp_path):
    table = pa.table({"ts": pa.array([1, 2], pa.timestamp("s")), "y": [1, 2],
                      "img": pa.array([{"bytes": b"a", "path": "p"}] * 2)})
    with pa.ipc.new_file(str(tmp_path / "t.arrow"), table.schema) as w:
        w.write_table(table)
    with pytest.raises(NotADatasetError, match="ts.*columns="):
        ArrowSource(tmp_path / "t.arrow")
    src = ArrowSource(tmp_path / "t.arrow", columns=["y", "img"])
    assert set(src.decode(src.read_many([1])[0])) == {"y", "img.bytes", "img.path"}
    with pytest.raises(NotADatasetError, match="nope"):
        ArrowSource(tmp_path / "t.arrow", columns=["nope"])


def test_fork_child_reads_after_parent(tmp_path):
    samples = [{"x": np.arange(i, i + 4), "n": i} for i in range(50)]
    src = write_arrow(tmp_path / "d", samples, rows_per_shard=16)
    parent = src.read_many([3, 40])
    pid = os.fork()
    if pid == 0:  # child: must reopen its own maps and read the same bytes
        code = 1
        try:
            ok = src.read_many([3, 40]) == parent and src._pid == os.getpid()
            ok = ok and src.decode(src.read_many([49])[0])["n"] == 49
            code = 0 if ok else 2
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.WEXITSTATUS(status) == 0


def test_pickle_is_paths_only_and_close_reopens(tmp_path):
    src = write_arrow(tmp_path / "d", [{"n": i} for i in range(20)], rows_per_shard=5)
    src.read_many([1])
    blob = pickle.dumps(src)
    assert len(blob) < 2048
    clone = pickle.loads(blob)
    assert clone.read_many([7, 19]) == src.read_many([7, 19])
    src.close()
    assert src.decode(src.read_many([19])[0]) == {"n": 19}


def test_progress_and_auto_shards(tmp_path, capsys):
    src = write_arrow(tmp_path / "d", ({"n": i} for i in range(10)), progress=True)
    assert len(src) == 10 and len(src.files()) == 1
    assert "write_arrow" in capsys.readouterr().err


_COUNTER = itertools.count()


@settings(max_examples=25, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.sampled_from(["<f2", "<f4", "<i8", "|u1", "|b1", "<u2"]),
       st.lists(st.lists(st.integers(0, 3), min_size=0, max_size=3), min_size=1,
                max_size=6), st.integers(1, 4))
def test_property_random_shapes_round_trip(tmp_path, dtype, shapes, per_shard):
    target = tmp_path / f"p{next(_COUNTER)}"
    samples = [{"a": np.ones(tuple(sh), np.dtype(dtype)), "t": "x" * len(sh)}
               for sh in shapes]
    src = write_arrow(target, samples, rows_per_shard=per_shard)
    for s, raw in zip(samples, _read_all(src)):
        assert raw == records.encode(s)
    shutil.rmtree(target)


# ---------------------------------------------------------------- bad input


def test_missing_path_glob_and_empty_dir(tmp_path):
    with pytest.raises(DatasetNotFoundError, match="does not exist"):
        ArrowSource(tmp_path / "nope")
    with pytest.raises(DatasetNotFoundError, match="glob"):
        ArrowSource(str(tmp_path / "*.arrow"))
    (tmp_path / "empty" / "train").mkdir(parents=True)
    write_arrow(tmp_path / "split" / "train", [{"n": 1}])
    with pytest.raises(NotADatasetError, match="no .arrow files"):
        ArrowSource(tmp_path / "empty")
    with pytest.raises(NotADatasetError, match="train"):
        ArrowSource(tmp_path / "split")


@pytest.mark.parametrize("damage", ["truncate_file", "truncate_stream", "garbage", "empty"])
def test_corrupt_files_raise_not_crash(tmp_path, damage):
    table = pa.table({"x": np.arange(1000), "s": [str(i) for i in range(1000)]})
    path = str(tmp_path / "c.arrow")
    opener = pa.ipc.new_stream if damage == "truncate_stream" else pa.ipc.new_file
    with opener(path, table.schema) as w:
        w.write_table(table, max_chunksize=100)
    data = open(path, "rb").read()
    cut = {"truncate_file": data[:len(data) // 2], "truncate_stream": data[:len(data) // 2],
           "garbage": b"\x07" * 64, "empty": b""}[damage]
    open(path, "wb").write(cut)
    with pytest.raises(CorruptRecordError, match="c.arrow"):
        ArrowSource(path)


def test_manifest_disagreeing_with_shard_is_corrupt(tmp_path):
    src = write_arrow(tmp_path / "d", [{"n": i} for i in range(10)], rows_per_shard=5)
    other = write_arrow(tmp_path / "e", [{"n": i} for i in range(3)])
    shutil.copy(other.files()[0], src.files()[1])
    fresh = ArrowSource(tmp_path / "d")
    with pytest.raises(CorruptRecordError, match="manifest"):
        fresh.read_many([7])


@pytest.mark.parametrize("bad", [-1, 10, 10 ** 9])
def test_out_of_range_index(tmp_path, bad):
    src = write_arrow(tmp_path / "d", [{"n": i} for i in range(10)])
    with pytest.raises(IndexError, match=str(bad)):
        src.read_many([1, bad])


def test_schema_mismatch_names_sample_field_and_types(tmp_path):
    with pytest.raises(SchemaMismatchError, match=r"sample 2.*'y'.*float.*int"):
        write_arrow(tmp_path / "a", [{"y": 1}, {"y": 2}, {"y": 2.5}])
    with pytest.raises(SchemaMismatchError, match=r"sample 1.*missing \['z'\]"):
        write_arrow(tmp_path / "b", [{"y": 1, "z": 1}, {"y": 2}])
    with pytest.raises(SchemaMismatchError, match=r"sample 1.*'a'.*<f8.*<f4"):
        write_arrow(tmp_path / "c", [{"a": np.zeros(2, np.float32)}, {"a": np.zeros(2)}])
    with pytest.raises(SchemaMismatchError, match=r"sample 0.*not storable"):
        write_arrow(tmp_path / "d", [{"a": [1, 2]}])
    assert not glob.glob(str(tmp_path / "*")) and not glob.glob(str(tmp_path / ".*"))


def test_empty_samples_and_bad_rows_per_shard(tmp_path):
    with pytest.raises(SchemaMismatchError, match="empty"):
        write_arrow(tmp_path / "d", [])
    with pytest.raises(ValueError, match="rows_per_shard=0"):
        write_arrow(tmp_path / "d", [{"n": 1}], rows_per_shard=0)
    assert not (tmp_path / "d").exists()


def test_exists_overwrite_and_failed_write_leaves_nothing(tmp_path):
    target = tmp_path / "d"
    write_arrow(target, [{"n": 1}])
    with pytest.raises(DatasetExistsError, match="overwrite=True"):
        write_arrow(target, [{"n": 2}])
    src = write_arrow(target, [{"n": 2}, {"n": 3}], overwrite=True)
    assert len(src) == 2 and src.decode(src.read_many([1])[0]) == {"n": 3}

    def boom():
        yield {"n": 1}
        raise RuntimeError("disk on fire")
    with pytest.raises(RuntimeError, match="disk on fire"):
        write_arrow(tmp_path / "e", boom(), rows_per_shard=1)
    assert sorted(os.listdir(tmp_path)) == ["d"]
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep me")
    with pytest.raises(DatasetExistsError, match="not an impact-loader Arrow dataset"):
        write_arrow(tmp_path / "mine", [{"n": 1}], overwrite=True)
    assert (tmp_path / "mine" / "notes.txt").exists()


def test_corrupt_offsets_inside_a_valid_file_raise(tmp_path):
    offsets = np.arange(0, 64 * 1000, 1000, dtype=np.int32)
    values = pa.array(np.zeros(int(offsets[-1]) + 1000))
    table = pa.table({"v": pa.ListArray.from_arrays(pa.array(np.append(offsets, 64000)
                                                            .astype(np.int32)), values)})
    path = tmp_path / "o.arrow"
    with pa.ipc.new_file(str(path), table.schema) as w:
        w.write_table(table)
    data = bytearray(path.read_bytes())
    at = data.find(offsets[:8].tobytes())
    assert at > 0
    data[at + 12:at + 16] = np.int32(1 << 30).tobytes()  # offset of row 3
    path.write_bytes(bytes(data))
    with pytest.raises(CorruptRecordError, match="o.arrow.*'v' has offsets"):
        ArrowSource(path)
