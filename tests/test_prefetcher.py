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


def test_delivers_every_job_in_its_own_order():
    src = PlainSource(make_samples(64))
    got = {}
    with Prefetcher(src, lambda job, raws: got.__setitem__(job.tag, raws), threads=4) as p:
        jobs = [p.submit(ReadJob(np.arange(a, a + 8), tag=a)) for a in range(0, 64, 8)]
        p.wait(jobs, timeout=30)
    for a in range(0, 64, 8):
        assert [src.decode(r)["index"] for r in got[a]] == list(range(a, a + 8))
    assert p.requests == 8 and p.bytes_read == sum(len(r) for v in got.values() for r in v)
    assert not _threads()


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
    with Prefetcher(src, lambda j, r: None, threads=1, retries=3, backoff_s=0.001) as p:
        job = p.submit(ReadJob([1, 2]))
        p.wait([job], timeout=30)
    assert src.calls == 3 and p.retried == 2 and job.error is None


def test_persistent_failure_reaches_the_caller_naming_indices():
    src = _Flaky(make_samples(8), fail_times=100)
    with Prefetcher(src, lambda j, r: None, threads=2, retries=2, backoff_s=0.001) as p:
        job = p.submit(ReadJob([5, 6]))
        with pytest.raises(PrefetchError, match=r"\[5, 6\].*storage hiccup") as info:
            p.wait([job], timeout=30)
    assert isinstance(info.value.__cause__, OSError)
    assert src.calls == 3  # one try + two retries


def test_non_io_errors_are_not_retried_but_surface():
    src = _Flaky(make_samples(8), fail_times=100, exc=ValueError)
    with Prefetcher(src, lambda j, r: None, retries=5, backoff_s=0.001) as p:
        job = p.submit(ReadJob([0]))
        with pytest.raises(PrefetchError):
            p.wait([job], timeout=30)
    assert src.calls == 1


def test_a_failing_delivery_is_a_job_failure():
    def boom(job, raws):
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

    p = Prefetcher(Slow(make_samples(8)), lambda j, r: None, threads=1)
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

    p = Prefetcher(Stuck(make_samples(2)), lambda j, r: None, threads=1)
    job = p.submit(ReadJob([1]))
    with pytest.raises(PrefetchError, match="did not finish"):
        p.wait([job], timeout=0.05)
    gate.set()
    p.close()


def test_lookahead_grows_with_latency_relative_to_consumption():
    p = Prefetcher(PlainSource(make_samples(2)), lambda j, r: None, max_lookahead=50)
    assert p.lookahead() == 4  # nothing observed yet
    p._latency_ema = 0.1
    p._consumed_at = [i * 0.01 for i in range(10)]  # a batch every 10 ms
    assert p.lookahead() == 22
    p._latency_ema = 10.0
    assert p.lookahead() == 50
    p.close()


@pytest.mark.parametrize("kw", [dict(threads=0), dict(retries=-1), dict(backoff_s=-1),
                                dict(max_lookahead=0)])
def test_bad_arguments(kw):
    with pytest.raises(ValueError, match=list(kw)[0]):
        Prefetcher(PlainSource(make_samples(1)), lambda j, r: None, **kw)
