"""The contract every Source meets, run against each factory in source_factories."""

from __future__ import annotations

import pickle
import threading

import numpy as np
import pytest

from impact_loader import Source
from source_factories import FACTORIES, make_samples
from source_factories import assert_same_sample as _same

N = 120


@pytest.fixture(params=sorted(FACTORIES))
def built(request, tmp_path):
    samples = make_samples(N)
    return FACTORIES[request.param](tmp_path, samples), samples


def test_is_a_source_with_exact_length(built):
    src, samples = built
    assert isinstance(src, Source)
    assert len(src) == len(samples)


def test_read_many_keeps_request_order_and_round_trips(built):
    src, samples = built
    order = [5, 0, 119, 5, 64, 63, 1]
    raws = src.read_many(order)
    assert len(raws) == len(order)
    for i, raw in zip(order, raws):
        _same(src.decode(raw), samples[i])


def test_every_index_round_trips(built):
    src, samples = built
    raws = src.read_many(np.arange(N))
    for i, raw in enumerate(raws):
        _same(src.decode(raw), samples[i])


def test_empty_request(built):
    src, _ = built
    assert list(src.read_many([])) == []


@pytest.mark.parametrize("bad", [-1, N, N + 1000])
def test_out_of_range_index_names_the_index(built, bad):
    src, _ = built
    with pytest.raises(IndexError, match=str(bad)):
        src.read_many([0, bad])


def test_pickles_cheaply_and_still_reads(built):
    src, samples = built
    blob = pickle.dumps(src)
    if type(src).__name__ != "PlainSource":
        assert len(blob) < 4096  # path and options only, never the data
    clone = pickle.loads(blob)
    _same(clone.decode(clone.read_many([7])[0]), samples[7])


def test_thread_safe_concurrent_reads(built):
    src, samples = built
    errors = []

    def worker(seed):
        rng = np.random.default_rng(seed)
        try:
            for _ in range(20):
                idx = rng.integers(0, N, size=9)
                for i, raw in zip(idx, src.read_many(idx)):
                    if src.decode(raw)["index"] != int(i):
                        errors.append(int(i))
        except Exception as exc:  # surfaced below
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(s,)) for s in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
