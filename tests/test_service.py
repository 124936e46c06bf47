"""The cache service (``ImpactDataset(cache_service=True)``): the directory, the annotator
and the reads run in a helper process; the training process keeps the sampler and the
hook. Byte-exact delivery under every policy is in test_end_to_end.py; here: the
process's lifetime, failures and what the training process still sees."""

from __future__ import annotations

import gc
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time

import pytest
import torch

import impact_loader as il
from impact_loader._process import process_gone
from impact_loader.cache.directory import CacheDirectory
from source_factories import FailingLMDB, make_samples

N = 200


def _xy(sample):
    return torch.from_numpy(sample["x"]), sample["label"]


def _labels_match(idx, y):
    return torch.equal(idx % 10, y)  # make_samples: label = index % 10


@pytest.fixture(scope="module")
def path(tmp_path_factory):
    p = str(tmp_path_factory.mktemp("svc") / "d")
    il.write_lmdb(p, make_samples(N))
    return p


def _dataset(source, cache_records=60):
    return il.ImpactDataset(source, transform=_xy, cache_bytes=cache_records * 500,
                            cache_service=True)


def _impact_threads():
    return [t.name for t in threading.enumerate() if t.name.startswith("impact-")]


def _gone(pid, timeout=15.0):
    """Whether process ``pid`` is gone (or a zombie) within ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not process_gone(pid):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


@pytest.mark.parametrize("workers", [0, 2])
def test_training_runs_with_no_cache_threads_in_the_training_process(path, workers):
    ds = _dataset(il.LMDBSource(path))
    loader = il.ImpactLoader(ds, batch_size=16, policy="impact", num_workers=workers,
                             sampler_options={"warmup_epochs": 1})
    try:
        pid = ds.service.process.pid
        assert pid != os.getpid() and ds.service.process.is_alive()
        for epoch in range(3):
            loader.set_epoch(epoch)
            n = 0
            for (x, y), idx in loader:
                assert _labels_match(idx, y)
                assert not _impact_threads()  # annotator and readers are elsewhere
                loader.update(idx, torch.rand(len(idx)))
                n += len(idx)
            assert n == len(loader.sampler.epoch_plan()[0])
        stats = loader.stats()
        assert stats["hits"] + stats["substitutions"] > 0
        assert stats["storage_requests"] > 0 and stats["service_cpu_s"] > 0
        # The training process's bookkeeping is its hook only.
        assert stats["bookkeeping_cpu_s"] == pytest.approx(stats["hook_cpu_s"])
        d = ds.directory.stats()
        assert d["planned"] == stats["planned"] and d["filled"] > 0
    finally:
        ds.close()
    assert _gone(pid)


def test_break_restart_and_a_second_sampler_continue_correctly(path):
    ds = _dataset(il.LMDBSource(path))
    try:
        loader = il.ImpactLoader(ds, batch_size=16, policy="uniform", num_workers=0)
        for k, ((x, y), idx) in enumerate(loader):  # stop early
            if k == 3:
                break
        seen = []
        for (x, y), idx in loader:  # a new pass restarts the epoch
            assert _labels_match(idx, y)
            seen.extend(idx.tolist())
        assert sorted(seen) == list(range(N))
        first = ds.pipeline.next_seq
        sampler = il.ImportanceSampler(ds, batch_size=8, policy="uniform")
        got = []
        for plan in sampler:
            assert plan.seq >= first  # batch numbers go on: readiness cells stay apart
            got.extend(i for _, i in ds.__getitems__(plan))
        assert sorted(got) == list(range(N))
        assert ds.source_reads == 0  # every read went through the service's prefetcher
    finally:
        ds.close()


@pytest.mark.parametrize("workers", [0, 2])
def test_a_persistent_storage_error_in_the_service_names_the_index(path, workers):
    ds = _dataset(FailingLMDB(path, bad=37))
    loader = il.ImpactLoader(ds, batch_size=10, policy="uniform", num_workers=workers)
    pid = ds.service.process.pid
    try:
        with pytest.raises((il.PrefetchError, OSError), match="37"):
            for epoch in range(2):
                loader.set_epoch(epoch)
                for _ in loader:
                    pass
    finally:
        ds.close()
    assert _gone(pid)


def test_transient_storage_errors_are_retried_in_the_service(path):
    ds = _dataset(FailingLMDB(path, bad=37, times=2))
    try:
        loader = il.ImpactLoader(ds, batch_size=10, policy="uniform", num_workers=0)
        seen = []
        for (x, y), idx in loader:
            assert _labels_match(idx, y)
            seen.extend(idx.tolist())
        assert sorted(seen) == list(range(N))
        assert ds.pipeline.prefetcher.retried == 2
    finally:
        ds.close()


@pytest.mark.parametrize("workers", [0, 2])
def test_an_annotation_failure_in_the_service_reaches_the_training_loop(path, monkeypatch,
                                                                         workers):
    def broken(self, *args, **kwargs):
        raise ValueError("directory is broken")

    # The service is forked when the sampler attaches: it inherits the patch.
    monkeypatch.setattr(CacheDirectory, "annotate", broken)
    ds = _dataset(il.LMDBSource(path))
    start = time.monotonic()
    try:
        loader = il.ImpactLoader(ds, batch_size=16, policy="uniform", num_workers=workers)
        with pytest.raises(il.PrefetchError, match="directory is broken"):
            for _ in loader:
                pass
    finally:
        ds.close()
    # Batches handed over before the failure was seen are marked failed: their
    # workers read the source instead of waiting out the readiness timeout.
    assert time.monotonic() - start < 60


@pytest.mark.parametrize("workers", [0, 2])
def test_a_killed_service_fails_the_next_batch_and_nothing_hangs(path, workers):
    ds = _dataset(il.LMDBSource(path))
    loader = il.ImpactLoader(ds, batch_size=10, policy="uniform", num_workers=workers)
    start = time.monotonic()
    try:
        it = iter(loader)
        next(it)
        os.kill(ds.service.process.pid, signal.SIGKILL)
        with pytest.raises(il.PrefetchError, match="cache service"):
            for _ in it:
                pass
        del it
    finally:
        ds.close()
    assert time.monotonic() - start < 60


def test_the_service_stops_when_everything_is_dropped(path):
    ds = _dataset(il.LMDBSource(path))
    loader = il.ImpactLoader(ds, batch_size=10, num_workers=0)
    next(iter(loader))
    pid = ds.service.process.pid
    del loader, ds
    gc.collect()
    assert _gone(pid)


def test_the_service_exits_when_the_training_process_dies(path):
    script = textwrap.dedent(f"""
        import os, signal, impact_loader as il
        ds = il.ImpactDataset(il.LMDBSource({path!r}), cache_bytes=30000,
                              cache_service=True)
        sampler = il.ImportanceSampler(ds, batch_size=10)
        ds.__getitems__(next(iter(sampler)))
        print(ds.service.process.pid, flush=True)
        os.kill(os.getpid(), signal.SIGKILL)
    """)
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == -signal.SIGKILL, out.stderr
    assert _gone(int(out.stdout.split()[0]))


def test_metrics_read_the_service_figures(path):
    from prometheus_client import CollectorRegistry, generate_latest

    from impact_loader.metrics import ImpactCollector

    ds = _dataset(il.LMDBSource(path))
    try:
        loader = il.ImpactLoader(ds, batch_size=10, policy="uniform", num_workers=0)
        for epoch in range(2):
            loader.set_epoch(epoch)
            for _ in loader:
                pass
        registry = CollectorRegistry()
        collector = ImpactCollector()
        collector.watch(loader, name="svc")
        registry.register(collector)
        text = generate_latest(registry).decode()
        want = ds.pipeline.prefetcher.requests
        assert want > 0
        lines = [ln for ln in text.splitlines()
                 if ln.startswith("impact_loader_storage_requests_total")
                 and '"prefetcher"' in ln]
        assert lines and float(lines[0].split()[-1]) == want
        admitted = ds.directory.stats()["admitted"]
        assert admitted > 0
        assert any(ln.startswith("impact_loader_cache_admissions_total")
                   and float(ln.split()[-1]) == admitted for ln in text.splitlines())
    finally:
        ds.close()


def test_cache_service_must_be_a_bool(path):
    with pytest.raises(TypeError, match="cache_service"):
        il.ImpactDataset(il.LMDBSource(path), cache_bytes=30000, cache_service="yes")


def test_a_sampler_with_a_larger_batch_gets_a_wider_annotation_table(path):
    """The table is made for the first sampler's batch size; a wider sampler sends the
    service a new one (over the pipe), and the workers of its loader read that."""
    ds = _dataset(il.LMDBSource(path))
    try:
        for bs in (8, 32):
            loader = il.ImpactLoader(ds, batch_size=bs, policy="uniform", num_workers=2)
            seen = []
            for (x, y), idx in loader:
                assert _labels_match(idx, y)
                seen.extend(idx.tolist())
            assert sorted(seen) == list(range(N))
            assert ds.annotations.width == bs
            stats = loader.stats()
            # Every sample came from the store: the workers found each annotation.
            assert stats["worker_source_reads"] == 0 and stats["worker_fallbacks"] == 0
            del loader
    finally:
        ds.close()
