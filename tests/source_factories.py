"""Factories that build every kind of Source over the same synthetic samples.

The shared contract suite (test_source_contract.py) runs against each entry of
``FACTORIES``; a new source adds one entry here.
"""

from __future__ import annotations

import hashlib
from typing import Callable, Dict, List

import numpy as np

import impact_loader as il
from impact_loader import records


def make_samples(n: int, *, seed: int = 0, payload: int = 256) -> List[dict]:
    """Samples that carry their own index and a checksum of their payload."""
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        x = rng.standard_normal(16).astype(np.float32)
        pay = rng.integers(0, 256, size=payload + (i % 7), dtype=np.uint8)
        out.append({
            "x": x,
            "label": int(i % 10),
            "index": i,
            "payload": pay,
            "name": f"sample-{i}",
            "digest": hashlib.blake2b(pay.tobytes(), digest_size=8).digest(),
        })
    return out


def assert_same_sample(got, want):
    """Assert two sample dicts are equal: same keys, types, dtypes, shapes, values."""
    assert set(got) == set(want)
    for k, v in want.items():
        if isinstance(v, np.ndarray):
            assert got[k].dtype == v.dtype and got[k].shape == v.shape
            np.testing.assert_array_equal(got[k], v)
        else:
            assert type(got[k]) is type(v) and got[k] == v


class PlainSource:
    """A user-written source that only implements the protocol (in-memory)."""

    def __init__(self, samples):
        self._raw = [records.encode(s) for s in samples]

    def __len__(self):
        return len(self._raw)

    def read_many(self, indices):
        n = len(self._raw)
        out = []
        for i in indices:
            i = int(i)
            if not 0 <= i < n:
                raise IndexError(f"index {i} out of range for {n} samples")
            out.append(self._raw[i])
        return out

    def decode(self, raw):
        return records.decode(raw)


class FailingLMDB:
    """An LMDB source whose reads of ``bad`` fail: ``times`` attempts, or always."""

    def __init__(self, path, bad, times=None):
        self.src, self.bad, self.times, self.calls = il.LMDBSource(path), bad, times, 0

    def __len__(self):
        return len(self.src)

    def read_many(self, indices):
        idx = [int(i) for i in indices]
        if self.bad in idx:
            self.calls += 1
            if self.times is None or self.calls <= self.times:
                raise OSError(f"storage error reading index {self.bad}")
        return self.src.read_many(idx)

    def decode(self, raw):
        return self.src.decode(raw)


def _lmdb(tmp_path, samples):
    return il.write_lmdb(str(tmp_path / "data.lmdb"), samples)


def _arrow(tmp_path, samples):
    return il.write_arrow(str(tmp_path / "arrow"), samples, rows_per_shard=37)


def _plain(tmp_path, samples):
    return PlainSource(samples)


def _throttled(tmp_path, samples):
    return il.ThrottledSource(_lmdb(tmp_path, samples), latency_ms=0.2,
                              bandwidth_mb_s=500, max_inflight=4)


FACTORIES: Dict[str, Callable] = {
    "lmdb": _lmdb,
    "arrow": _arrow,
    "plain": _plain,
    "throttled": _throttled,
}
