"""LMDB storage: layout, process safety, foreign LMDBs, bad input."""

from __future__ import annotations

import multiprocessing as mp
import os
import shutil

import lmdb
import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader, Dataset

import impact_loader as il
from impact_loader.lmdb_source import META_KEY, index_key
from lock_holder import held_by_another_thread
from source_factories import make_samples


@pytest.fixture
def src(tmp_path):
    return il.write_lmdb(str(tmp_path / "d.lmdb"), make_samples(50))


def test_keys_are_big_endian_and_in_storage_order(src):
    src.close()  # py-lmdb allows one handle per file per process
    env = lmdb.open(src.path, readonly=True, lock=False)
    try:
        with env.begin() as txn:
            keys = [k for k, _ in txn.cursor()]
    finally:
        env.close()
    assert keys[:-1] == [index_key(i) for i in range(50)]
    assert keys[-1] == META_KEY  # metadata sorts after every sample key
    assert index_key(256) == b"\0\0\0\0\0\0\1\0"


def test_length_and_schema_from_metadata(src):
    assert len(src) == 50
    assert src.schema["x"] == ["array", "<f4"]
    assert not os.path.exists(os.path.join(src.path, "lock.mdb"))


class _Reads(Dataset):
    def __init__(self, source):
        self.source = source

    def __len__(self):
        return len(self.source)

    def __getitem__(self, i):
        sample = self.source.decode(self.source.read_many([i])[0])
        return torch.tensor(sample["index"]), torch.from_numpy(sample["x"].copy())


@pytest.mark.parametrize("method", ["fork", "spawn", "forkserver"])
def test_workers_under_every_start_method_while_parent_has_it_open(src, method):
    src.read_many([0, 1])  # the main process already has the environment open
    loader = DataLoader(_Reads(src), batch_size=8, num_workers=2,
                        multiprocessing_context=method)
    seen = torch.cat([idx for idx, _ in loader])
    assert sorted(seen.tolist()) == list(range(50))
    # and the parent still reads after its workers are gone
    assert src.decode(src.read_many([49])[0])["index"] == 49


def _child_reads(path, q):
    s = il.LMDBSource(path)
    q.put([s.decode(r)["index"] for r in s.read_many([3, 4])])


def test_second_source_on_same_path_shares_the_environment(src):
    other = il.LMDBSource(src.path)
    assert other.read_many([2]) == src.read_many([2])
    other.close()
    assert src.decode(src.read_many([2])[0])["index"] == 2
    ctx = mp.get_context("fork")
    q = ctx.Queue()
    p = ctx.Process(target=_child_reads, args=(src.path, q))
    p.start()
    assert q.get(timeout=30) == [3, 4]
    p.join(30)
    assert p.exitcode == 0


def test_existing_foreign_lmdb_with_ascii_keys_and_raw_bytes(tmp_path):
    path = str(tmp_path / "foreign")
    env = lmdb.open(path, map_size=1 << 24)
    blobs = [os.urandom(100 + i) for i in range(30)]
    with env.begin(write=True) as txn:
        for i, b in enumerate(blobs):
            txn.put(b"%08d" % i, b)
        txn.put(b"__len__", b"30")
    env.close()
    s = il.LMDBSource(path, key_fn=il.AsciiKeys(8), decode_fn=bytes, length_key=b"__len__")
    assert len(s) == 30
    assert s.read_many([29, 0]) == [blobs[29], blobs[0]]
    assert s.decode(s.read_many([5])[0]) == blobs[5]
    # without a length key the entry count is used
    s2 = il.LMDBSource(path, key_fn=il.AsciiKeys(8), decode_fn=bytes, length=30)
    assert len(s2) == 30
    s.close()
    s2.close()
    # a spawn worker can rebuild it: key_fn and decode_fn pickle by reference
    loader = DataLoader(_RawLen(s2), batch_size=10, num_workers=1,
                        multiprocessing_context="spawn")
    assert torch.cat(list(loader)).tolist() == [len(b) for b in blobs]


class _RawLen(Dataset):
    def __init__(self, source):
        self.source = source

    def __len__(self):
        return len(self.source)

    def __getitem__(self, i):
        return len(self.source.read_many([i])[0])


def test_single_file_environment(tmp_path):
    path = str(tmp_path / "one.mdb")
    env = lmdb.open(path, subdir=False, map_size=1 << 22)
    with env.begin(write=True) as txn:
        txn.put(index_key(0), il.encode({"a": 1}))
    env.close()
    s = il.LMDBSource(path)
    assert len(s) == 1 and s.decode(s.read_many([0])[0]) == {"a": 1}
    assert s.files() == [os.path.realpath(path)]


# ---- bad input ----------------------------------------------------------------------
def test_missing_path(tmp_path):
    with pytest.raises(il.DatasetNotFoundError, match="does not exist"):
        il.LMDBSource(str(tmp_path / "nope"))


def test_directory_that_is_not_lmdb(tmp_path):
    (tmp_path / "junk.txt").write_text("hi")
    with pytest.raises(il.NotADatasetError, match="data.mdb"):
        il.LMDBSource(str(tmp_path))


def test_corrupt_data_file(tmp_path):
    d = tmp_path / "bad"
    d.mkdir()
    (d / "data.mdb").write_bytes(b"\x00garbage" * 1000)
    with pytest.raises(il.NotADatasetError, match="not an LMDB"):
        il.LMDBSource(str(d))


def test_truncated_data_file_is_an_error_not_a_crash(tmp_path):
    src = il.write_lmdb(str(tmp_path / "t"), make_samples(400, payload=2000))
    data = os.path.join(src.path, "data.mdb")
    src.close()
    copy = tmp_path / "cut"
    shutil.copytree(src.path, copy)
    with open(copy / "data.mdb", "r+b") as fh:
        fh.truncate(os.path.getsize(data) // 3)
    with pytest.raises((il.SourceError, il.CorruptRecordError)):
        s = il.LMDBSource(str(copy))
        s.read_many(range(len(s)))


def test_record_that_does_not_decode(tmp_path):
    path = str(tmp_path / "undecodable")
    env = lmdb.open(path, map_size=1 << 22)
    with env.begin(write=True) as txn:
        txn.put(index_key(0), b"not a record at all")
    env.close()
    s = il.LMDBSource(path, length=1)
    with pytest.raises(il.CorruptRecordError, match="header length"):
        s.decode(s.read_many([0])[0])


def test_missing_key_names_the_index(tmp_path):
    path = str(tmp_path / "holes")
    env = lmdb.open(path, map_size=1 << 22)
    with env.begin(write=True) as txn:
        txn.put(index_key(0), il.encode({"a": 1}))
    env.close()
    s = il.LMDBSource(path, length=3)
    with pytest.raises(il.CorruptRecordError, match="index 2"):
        s.read_many([0, 2])


def test_schema_mismatch_names_sample_and_field(tmp_path):
    samples = [{"x": np.zeros(3, np.float32), "y": 1}, {"x": np.zeros(3, np.float64), "y": 2}]
    with pytest.raises(il.SchemaMismatchError, match=r"sample 1 field 'x'"):
        il.write_lmdb(str(tmp_path / "m"), samples)
    with pytest.raises(il.SchemaMismatchError, match="missing"):
        il.write_lmdb(str(tmp_path / "m"), [{"x": 1, "y": 2}, {"x": 1}])
    assert not os.path.exists(tmp_path / "m")
    assert [p for p in os.listdir(tmp_path) if "tmp" in p] == []  # nothing half-written


def test_refuses_to_overwrite_without_flag(tmp_path, src):
    with pytest.raises(il.DatasetExistsError, match="overwrite=True"):
        il.write_lmdb(src.path, make_samples(3))
    src.close()
    new = il.write_lmdb(src.path, make_samples(3), overwrite=True)
    assert len(new) == 3


def test_empty_samples(tmp_path):
    with pytest.raises(ValueError, match="no samples"):
        il.write_lmdb(str(tmp_path / "e"), [])


def test_map_grows_when_full(tmp_path):
    samples = ({"p": np.full(30000, i % 255, np.uint8)} for i in range(200))
    s = il.write_lmdb(str(tmp_path / "g"), samples, map_size=1 << 20, txn_samples=16)
    assert len(s) == 200 and int(s.decode(s.read_many([199])[0])["p"][0]) == 199 % 255


def test_fork_while_another_thread_holds_the_registry_lock(src):
    from impact_loader import _lmdb_env

    src.close()
    with held_by_another_thread(_lmdb_env._registry_lock):
        ctx = mp.get_context("fork")
        q = ctx.Queue()
        p = ctx.Process(target=_child_reads, args=(src.path, q))
        p.start()
        assert q.get(timeout=30) == [3, 4]  # the child did not inherit a held lock
        p.join(30)
