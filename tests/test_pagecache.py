"""Page-cache eviction really drops a source's files from memory."""

from __future__ import annotations

import os

import pytest

import impact_loader as il
from source_factories import make_samples


def _fstype(path):
    best, kind = "", ""
    with open("/proc/mounts") as fh:
        for line in fh:
            parts = line.split()
            mnt = parts[1]
            if os.path.realpath(path).startswith(mnt) and len(mnt) > len(best):
                best, kind = mnt, parts[2]
    return kind


def test_evict_then_resident_is_near_zero(tmp_path):
    if _fstype(str(tmp_path)) in ("tmpfs", "ramfs"):
        pytest.skip("tmp_path is in memory; there is no page cache to drop")
    src = il.write_lmdb(str(tmp_path / "d"), make_samples(300, payload=4000))
    src.read_many(range(300))
    data = src.files()[0]
    assert il.resident_bytes(data) > 0
    advised = il.evict_page_cache(src)
    assert advised == os.path.getsize(data)
    # LMDB keeps the file mapped; unreferenced clean pages still go
    assert il.resident_bytes(data) <= 0.1 * os.path.getsize(data)
    src.read_many([0, 150, 299])
    assert il.resident_bytes(data) > 0


def test_paths_and_directories(tmp_path):
    f = tmp_path / "x.bin"
    f.write_bytes(b"a" * 10000)
    assert il.evict_page_cache(str(f)) == 10000
    assert il.evict_page_cache(str(tmp_path)) == 10000
    with pytest.raises(FileNotFoundError):
        il.evict_page_cache(str(tmp_path / "missing"))
