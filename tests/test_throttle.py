"""ThrottledSource's cost model, checked on a simulated clock (no wall-clock asserts)."""

from __future__ import annotations

import pickle
import threading

import pytest

import impact_loader as il
from impact_loader.throttle import count_runs
from source_factories import PlainSource


class _Clock:
    def __init__(self):
        self.t = 0.0
        self.slept = []

    def now(self):
        return self.t

    def sleep(self, d):
        self.slept.append(d)
        self.t += d


class _Blob:
    """A source whose records are fixed-size blobs."""

    def __init__(self, n, size):
        self.n, self.size = n, size

    def __len__(self):
        return self.n

    def read_many(self, idx):
        return [bytes(self.size) for _ in idx]

    def decode(self, raw):
        return raw


def _throttled(latency_ms=4.0, bw=100.0, inflight=8, size=10_000):
    src = il.ThrottledSource(_Blob(1000, size), latency_ms=latency_ms,
                             bandwidth_mb_s=bw, max_inflight=inflight)
    clock = _Clock()
    src._now, src._sleep = clock.now, clock.sleep
    return src, clock


@pytest.mark.parametrize("idx,runs", [([], 0), ([3], 1), ([3, 4, 5], 1), ([5, 4], 2),
                                      ([1, 2, 9, 10, 11, 0], 3), ([7, 7], 2)])
def test_count_runs(idx, runs):
    assert count_runs(idx) == runs


def test_one_latency_per_run_plus_bytes_over_bandwidth():
    src, clock = _throttled()
    src.read_many([10, 11, 12, 50, 51, 90])  # 3 runs, 60 kB
    assert clock.t == pytest.approx(3 * 0.004 + 60_000 / 100e6)
    assert (src.requests, src.calls, src.bytes_read) == (3, 1, 60_000)


def test_sequential_package_is_cheaper_than_random_reads():
    seq, c1 = _throttled()
    seq.read_many(list(range(100, 164)))
    rnd, c2 = _throttled()
    rnd.read_many(list(range(0, 640, 10)))
    assert c1.t == pytest.approx(0.004 + 64 * 10_000 / 100e6)
    assert c2.t == pytest.approx(64 * 0.004 + 64 * 10_000 / 100e6)


def test_link_is_shared_between_calls():
    src, clock = _throttled(latency_ms=0.0, bw=1.0, size=1_000_000)  # 1 s per record
    src.read_many([0])
    # a second call issued "at the same time" as the first must queue on the link
    clock.t = 0.0
    src.read_many([1])
    assert clock.t == pytest.approx(2.0)


def test_at_most_max_inflight_calls_at_once():
    active, peak, lock = [0], [0], threading.Lock()
    release = threading.Event()

    class Slow(_Blob):
        def read_many(self, idx):
            with lock:
                active[0] += 1
                peak[0] = max(peak[0], active[0])
            release.wait(5)
            with lock:
                active[0] -= 1
            return super().read_many(idx)

    src = il.ThrottledSource(Slow(100, 10), latency_ms=0, bandwidth_mb_s=float("inf"),
                             max_inflight=3)
    threads = [threading.Thread(target=src.read_many, args=([i],)) for i in range(8)]
    for t in threads:
        t.start()
    for _ in range(200):
        if active[0] == 3:
            break
        threading.Event().wait(0.01)
    assert active[0] == 3
    release.set()
    for t in threads:
        t.join()
    assert peak[0] == 3 and src.calls == 8


def test_profiles_and_pickling():
    src = il.ThrottledSource(PlainSource([{"a": 1}]), profile="nfs")
    assert (src.latency_ms, src.bandwidth_mb_s, src.max_inflight) == (4.0, 100.0, 8)
    assert {"nfs", "object-store", "hdd", "local-ssd"} <= set(il.PROFILES)
    clone = pickle.loads(pickle.dumps(src))
    assert clone.decode(clone.read_many([0])[0]) == {"a": 1}
    assert clone.calls == 1 and src.calls == 0
    override = il.ThrottledSource(PlainSource([{"a": 1}]), profile="hdd", latency_ms=1)
    assert override.latency_ms == 1.0 and override.max_inflight == 1


@pytest.mark.parametrize("kw,match", [
    (dict(latency_ms=-1), "latency_ms=-1"),
    (dict(bandwidth_mb_s=0), "bandwidth_mb_s=0"),
    (dict(max_inflight=0), "max_inflight=0"),
    (dict(profile="floppy"), "profile='floppy'"),
])
def test_bad_figures(kw, match):
    with pytest.raises(ValueError, match=match):
        il.ThrottledSource(PlainSource([{"a": 1}]), **kw)
