"""The prefetch engine: delivery, retries, surfaced failures, clean shutdown."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from impact_loader import PrefetchError
from impact_loader.prefetcher import Prefetcher, ReadJob
from source_factories import PlainSource, make_samples


def _threads():
    return {t.name for t in threading.enumerate() if t.name.startswith("impact-")}


class _Logged(PlainSource):
    """A source that keeps the indices of every read_many call."""

    def __init__(self, samples):
        super().__init__(samples)
        self.calls, self.lock = [], threading.Lock()

    def read_many(self, indices):
        with self.lock:
            self.calls.append([int(i) for i in indices])
        return super().read_many(indices)


class _Recorder:
    """on_read that keeps every call's indices and the bytes per index."""

    def __init__(self):
        self.calls, self.raw, self.lock = [], {}, threading.Lock()

    def __call__(self, indices, raws):
        with self.lock:
            self.calls.append(list(indices))
            self.raw.update(zip(indices, raws))


def test_packages_are_read_with_one_call_each():
    src = PlainSource(make_samples(64))
    rec = _Recorder()
    with Prefetcher(src, rec, threads=4) as p:
        jobs = [p.submit(ReadJob([a], [a + 8], tag=a)) for a in range(0, 64, 8)]
        p.wait(jobs, timeout=30)
    assert sorted(rec.calls) == [list(range(a, a + 8)) for a in range(0, 64, 8)]
    assert {i: src.decode(r)["index"] for i, r in rec.raw.items()} == {i: i for i in range(64)}
    assert p.requests == 8 and p.bytes_read == sum(len(r) for r in rec.raw.values())
    assert p.pending == 0 and all(j.done.is_set() and j.error is None for j in jobs)
    assert not _threads()


def test_single_misses_are_combined_into_sorted_calls_of_at_most_chunk():
    src = _Logged(make_samples(100))
    rec = _Recorder()
    idx = np.random.default_rng(0).permutation(100)[:40]
    with Prefetcher(src, rec, threads=1, chunk=8) as p:
        job = p.submit(ReadJob(idx, tag="batch"))
        p.wait([job], timeout=30)
    assert sorted(i for c in src.calls for i in c) == sorted(idx.tolist())
    assert all(c == sorted(c) and 1 <= len(c) <= 8 for c in src.calls)
    assert len(src.calls) == 5  # one thread, a long queue: full chunks
    # The job's bytes are stored with one on_read call once all of them arrived.
    assert len(rec.calls) == 1 and sorted(rec.calls[0]) == sorted(idx.tolist())
    assert {i: src.decode(r)["index"] for i, r in rec.raw.items()} == {i: i for i in idx}


def test_a_short_queue_is_spread_over_the_threads():
    gate = threading.Event()

    class Gated(_Logged):
        def read_many(self, idx):
            gate.wait(10)
            return super().read_many(idx)

    rec = _Recorder()
    src = Gated(make_samples(16))
    with Prefetcher(src, rec, threads=4, chunk=8) as p:
        job = p.submit(ReadJob(np.arange(0, 16, 2)))  # 8 singles, 4 threads: 2 per call
        gate.set()
        p.wait([job], timeout=30)
    assert max(len(c) for c in src.calls) <= 2 and len(rec.raw) == 8


def test_jobs_complete_only_when_all_their_runs_landed():
    src = PlainSource(make_samples(64))
    rec = _Recorder()
    with Prefetcher(src, rec, threads=3, chunk=4) as p:
        jobs = [p.submit(ReadJob([b * 16, b * 16 + 3, b * 16 + 8],
                                 [b * 16 + 1, b * 16 + 8, b * 16 + 9])) for b in range(4)]
        p.wait(jobs, timeout=30)
        for j in jobs:  # every index of a completed job has been handed to on_read
            assert set(j.indices.tolist()) <= set(rec.raw)
    empty = ReadJob([])
    assert empty.done.is_set() and empty.n_samples == 0


class _Flaky(PlainSource):
    def __init__(self, samples, fail_times, exc=OSError):
        super().__init__(samples)
        self.fail_times, self.exc, self.calls = fail_times, exc, 0
        self.lock = threading.Lock()

    def read_many(self, indices):
        with self.lock:
            self.calls += 1
            fail = self.calls <= self.fail_times
        if fail:
            raise self.exc("storage hiccup")
        return super().read_many(indices)


def test_oserror_is_retried_with_backoff():
    src = _Flaky(make_samples(8), fail_times=2)
    with Prefetcher(src, lambda i, r: None, threads=1, retries=3, backoff_s=0.001) as p:
        job = p.submit(ReadJob([1, 2]))
        p.wait([job], timeout=30)
    assert src.calls == 3 and p.retried == 2 and job.error is None


def test_persistent_failure_reaches_the_caller_naming_indices():
    src = _Flaky(make_samples(8), fail_times=100)
    with Prefetcher(src, lambda i, r: None, threads=1, retries=2, backoff_s=0.001) as p:
        job = p.submit(ReadJob([5, 6]))
        with pytest.raises(PrefetchError, match=r"\[5, 6\].*storage hiccup") as info:
            p.wait([job], timeout=30)
    assert isinstance(info.value.__cause__, OSError)
    assert src.calls == 3  # one try + two retries


def test_non_io_errors_are_not_retried_but_surface():
    src = _Flaky(make_samples(8), fail_times=100, exc=ValueError)
    with Prefetcher(src, lambda i, r: None, retries=5, backoff_s=0.001) as p:
        job = p.submit(ReadJob([0]))
        with pytest.raises(PrefetchError):
            p.wait([job], timeout=30)
    assert src.calls == 1


def test_a_failing_delivery_is_a_job_failure():
    def boom(indices, raws):
        raise MemoryError("store full")

    with Prefetcher(PlainSource(make_samples(4)), boom) as p:
        job = p.submit(ReadJob([0]))
        with pytest.raises(PrefetchError, match="store full"):
            p.wait([job], timeout=30)


def test_close_with_queued_jobs_neither_hangs_nor_leaks_threads():
    gate = threading.Event()

    class Slow(PlainSource):
        def read_many(self, idx):
            gate.wait(10)
            return super().read_many(idx)

    p = Prefetcher(Slow(make_samples(8)), lambda i, r: None, threads=1, chunk=1)
    jobs = [p.submit(ReadJob([i])) for i in range(8)]
    gate.set()
    p.close()
    assert not _threads()
    for job in jobs:  # every job is either delivered or reports the close
        assert job.done.is_set()
    with pytest.raises(RuntimeError, match="closed"):
        p.submit(ReadJob([0]))


def test_wait_times_out_with_a_clear_error():
    gate = threading.Event()

    class Stuck(PlainSource):
        def read_many(self, idx):
            gate.wait(10)
            return super().read_many(idx)

    p = Prefetcher(Stuck(make_samples(2)), lambda i, r: None, threads=1)
    job = p.submit(ReadJob([1]))
    with pytest.raises(PrefetchError, match="did not finish"):
        p.wait([job], timeout=0.05)
    gate.set()
    p.close()


def test_lookahead_grows_with_latency_relative_to_consumption():
    p = Prefetcher(PlainSource(make_samples(2)), lambda i, r: None, max_lookahead=50)
    assert p.lookahead() == 4  # nothing observed yet
    p._core.latency_ema = 0.1
    p._consumed_at = [i * 0.01 for i in range(10)]  # a batch every 10 ms
    assert p.lookahead() == 22
    p._core.latency_ema = 10.0
    assert p.lookahead() == 50
    p.close()


@pytest.mark.parametrize("kw", [dict(threads=0), dict(chunk=0), dict(retries=-1),
                                dict(backoff_s=-1), dict(max_lookahead=0)])
def test_bad_arguments(kw):
    with pytest.raises(ValueError, match=list(kw)[0]):
        Prefetcher(PlainSource(make_samples(1)), lambda i, r: None, **kw)


def test_bad_job():
    with pytest.raises(ValueError, match="stop > start"):
        ReadJob([3, 4], [3, 5])


def test_an_unreachable_prefetcher_stops_its_threads():
    import gc

    p = Prefetcher(PlainSource(make_samples(4)), lambda i, r: None, threads=2)
    p.wait([p.submit(ReadJob([0, 1]))], timeout=30)
    del p
    gc.collect()
    assert not _threads()


def test_reads_stay_near_queue_order_behind_an_unfair_source():
    class OneSlot(PlainSource):  # a semaphore lets a newcomer overtake a waiter
        def __init__(self, samples):
            super().__init__(samples)
            self.slot = threading.Semaphore(1)

        def read_many(self, idx):
            with self.slot:
                return super().read_many(idx)

    rec = _Recorder()
    with Prefetcher(OneSlot(make_samples(200)), rec, threads=4, chunk=1) as p:
        jobs = [p.submit(ReadJob([i])) for i in range(200)]
        p.wait(jobs, timeout=60)
    order = [c[0] for c in rec.calls]
    # Unit n may start only while n < oldest unit in progress + window (2 * threads):
    # every unit from `window` on was read after unit 0, and so on.
    window = 8
    for n in range(0, 200 - window, 17):
        assert order.index(n) < min(order.index(m) for m in range(n + window, 200))


def test_a_job_with_nothing_to_read_is_done_and_not_pending():
    pf = Prefetcher(PlainSource(make_samples(8)), lambda idx, raws: None, threads=1)
    try:
        job = pf.submit(ReadJob(np.empty(0, np.int64), tag=0))
        assert job.done.is_set()
        assert pf.pending == 0
    finally:
        pf.close()
