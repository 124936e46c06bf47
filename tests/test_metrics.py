"""Prometheus metrics: scraped over HTTP during a real training loop, checked against
the loader's own counters and against a source that counts every byte it serves."""

from __future__ import annotations

import errno
import gc
import importlib.util
import json
import multiprocessing as mp
import os
import re
import threading
import urllib.error
import urllib.request
from typing import Dict, Tuple

import pytest
import torch
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families
from torch.utils.data import DataLoader

import impact_loader as il
from impact_loader import _metrics_server, metrics
from impact_loader._metrics_families import PREFIX, SPECS
from source_factories import make_samples

N = 480
EXAMPLES = os.path.join(os.path.dirname(__file__), os.pardir, "examples")


class CountingSource:
    """Wraps a source; counts read_many calls, records and bytes in every process."""

    def __init__(self, inner):
        self.inner = inner
        self.counts = mp.Array("q", 3)  # calls, records, bytes; shared with workers

    def __len__(self):
        return len(self.inner)

    def read_many(self, indices):
        raws = self.inner.read_many(indices)
        with self.counts.get_lock():
            self.counts[0] += 1
            self.counts[1] += len(raws)
            self.counts[2] += sum(len(r) for r in raws)
        return raws

    def decode(self, raw):
        return self.inner.decode(raw)


def _xy(sample):
    return torch.from_numpy(sample["x"]), sample["label"]


Samples = Dict[Tuple[str, Tuple[Tuple[str, str], ...]], float]


def _parse(text: str) -> Tuple[Dict[str, str], Samples]:
    types, samples = {}, {}
    for fam in text_string_to_metric_families(text):
        types[fam.name] = fam.type
        for s in fam.samples:
            samples[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return types, samples


def _scrape(url: str) -> Tuple[Dict[str, str], Samples]:
    with urllib.request.urlopen(url, timeout=10) as resp:
        return _parse(resp.read().decode())


def _val(samples: Samples, name: str, **labels: str) -> float:
    """Sum of the samples called ``name`` whose labels include ``labels``."""
    hits = [v for (n, lab), v in samples.items()
            if n == name and set(labels.items()) <= set(lab)]
    assert hits, f"no sample {name} {labels}"
    return sum(hits)


def _labels(samples: Samples, name: str, key: str) -> set:
    return {dict(lab)[key] for (n, lab) in samples if n == name}


@pytest.fixture
def clean_metrics():
    yield
    metrics.stop()
    for name in list(metrics.collector().watched()):
        metrics.unwatch(name)
    assert not _metrics_server._RUNNING  # no server left running


def _check_conventions(types, samples):
    for fam, kind in types.items():
        assert fam.startswith(PREFIX)
        if kind == "histogram":
            assert fam.endswith(("_seconds", "_bytes"))
    for (name, lab) in samples:
        assert dict(lab)["loader"] == "train" and dict(lab)["rank"] == "0"
        if types.get(name[:-len("_total")]) == "counter":
            assert name.endswith("_total")


def test_training_loop_scraped_over_http(tmp_path, clean_metrics):
    src = CountingSource(il.write_lmdb(str(tmp_path / "d"), make_samples(N)))
    record = len(src.inner.read_many([0])[0])
    ds = il.ImpactDataset(src, transform=_xy, cache_bytes=int(0.3 * N * record))
    loader = il.ImpactLoader(ds, batch_size=32, num_workers=2,
                             sampler_options={"warmup_epochs": 1})
    metrics.watch(loader)
    server = metrics.serve(port=0)
    assert isinstance(server, int) and 0 < server < 65536
    assert server.url == f"http://127.0.0.1:{int(server)}/metrics"
    model = torch.nn.Linear(16, 10)
    received, mid = 0, None
    background, stop = [], threading.Event()

    def scrape_while_training():  # a Prometheus server scraping concurrently
        try:
            while True:
                background.append(_val(_scrape(server.url)[1],
                                       "impact_loader_samples_delivered_total"))
                if stop.wait(0.01):
                    return
        except BaseException as exc:  # noqa: BLE001 - reported by the assert below
            background.append(exc)

    scraper = threading.Thread(target=scrape_while_training)
    try:
        for epoch in range(3):
            loader.set_epoch(epoch)
            if epoch == 2:
                scraper.start()
            for b, ((x, y), idx) in enumerate(loader):
                loss = torch.nn.functional.cross_entropy(model(x), y, reduction="none")
                loader.update(idx, loss.detach())
                received += 1
                if epoch == 1 and b == 3:
                    mid = _scrape(server.url)
                    mid_stats, mid_served = loader.stats(), list(src.counts)
                    mid_received = received
        stop.set()
        scraper.join()
        end_types, end = _scrape(server.url)
        stats, served = loader.stats(), list(src.counts)
        with pytest.raises(il.PortInUseError) as err:  # a second server, same port
            metrics.serve(port=int(server))
        assert isinstance(err.value, OSError) and err.value.errno == errno.EADDRINUSE
        assert f"port {int(server)}" in str(err.value) and "port=0" in str(err.value)
        entries = ds.directory.stats()["entries"]
    finally:
        server.close()
        ds.close()
    with pytest.raises(urllib.error.URLError):
        urllib.request.urlopen(server.url, timeout=5)

    # Scrapes concurrent with training: all parsed, totals never go down.
    assert background and all(isinstance(v, float) for v in background), background[-1:]
    assert background == sorted(background)

    # Mid-training: the pipeline counts only move in this thread, so they agree exactly.
    types, s = mid
    _check_conventions(types, s)
    for src_label, key in (("cache_hit", "hits"), ("substitution", "substitutions")):
        assert _val(s, "impact_loader_samples_delivered_total", source=src_label) \
            == mid_stats[key]
    assert _val(s, "impact_loader_samples_delivered_total") == mid_stats["planned"]
    assert _val(s, "impact_loader_data_wait_seconds_count") == mid_received
    assert _val(s, "impact_loader_epoch") == 1
    # Reads in flight may finish after the scrape, never before the source served them.
    assert _val(s, "impact_loader_storage_read_bytes_total") <= mid_served[2]

    # At the end every read is done: the metrics match the source byte for byte.
    _check_conventions(end_types, end)
    assert _val(end, "impact_loader_storage_read_bytes_total") == served[2]
    assert _val(end, "impact_loader_storage_requests_total") == served[0]
    assert _val(end, "impact_loader_storage_samples_total") == served[1]
    assert _val(end, "impact_loader_storage_read_bytes_total", reader="prefetcher") \
        == stats["storage_bytes"]
    assert _val(end, "impact_loader_storage_read_bytes_total", reader="dataset") \
        == stats["worker_source_bytes"] > 0  # worker fallbacks + the size probe
    for reader in ("prefetcher", "dataset"):
        assert _val(end, "impact_loader_storage_request_duration_seconds_count",
                    reader=reader) == _val(end, "impact_loader_storage_requests_total",
                                           reader=reader)
    delivered = _val(end, "impact_loader_samples_delivered_total")
    assert delivered == stats["planned"] == stats["samples_planned"]
    assert delivered == (stats["hits"] + stats["substitutions"]
                         + _val(end, "impact_loader_samples_delivered_total",
                                source="storage"))
    assert _val(end, "impact_loader_substitutions_total") == stats["substitutions"]
    hits = _val(end, "impact_loader_cache_hits_total")
    misses = _val(end, "impact_loader_cache_misses_total")
    assert hits + misses == delivered  # the workers read every delivered sample
    assert (hits, misses) == (stats["worker_store_hits"], stats["worker_source_reads"])
    assert _labels(end, "impact_loader_cache_hits_total", "tier") == {"none", "h", "l"}
    assert _val(end, "impact_loader_cache_fallbacks_total") == stats["worker_fallbacks"]
    assert _val(end, "impact_loader_data_wait_seconds_count") == received
    assert _val(end, "impact_loader_data_wait_seconds_bucket", le="+Inf") == received
    assert _val(end, "impact_loader_data_wait_seconds_sum") >= sum(loader.data_wait) > 0
    for tier in ("h", "l", "staging"):
        assert 0 <= _val(end, "impact_loader_cache_bytes", tier=tier) \
            <= _val(end, "impact_loader_cache_capacity_bytes", tier=tier)
    assert _val(end, "impact_loader_cache_entries") == entries
    assert _val(end, "impact_loader_epoch") == 2
    assert _val(end, "impact_loader_dataset_samples") == N
    assert _val(end, "impact_loader_trained_fraction") == \
        len(loader.sampler.epoch_plan()[0]) / N
    assert _val(end, "impact_loader_scored_fraction") == stats["scored"] / N
    assert _val(end, "impact_loader_losses_received_total") == stats["losses_received"]
    q = [_val(end, "impact_loader_importance", quantile=k) for k in ("0.1", "0.5", "0.9")]
    assert q == sorted(q) and q[0] > 0
    assert _val(end, "impact_loader_prefetch_pending_reads") == 0
    assert _val(end, "impact_loader_prefetch_lookahead_batches") >= 1


def test_register_on_a_custom_registry(tmp_path, clean_metrics):
    src = il.write_lmdb(str(tmp_path / "d"), make_samples(96))
    ds = il.ImpactDataset(src, cache_bytes=40 * len(src.read_many([0])[0]))
    sampler = il.ImportanceSampler(ds, batch_size=16, policy="uniform")
    registry = CollectorRegistry()
    coll = metrics.register(registry)
    assert metrics.register(registry) is coll  # idempotent
    with pytest.raises(ValueError):  # two collectors would export the same names
        registry.register(metrics.ImpactCollector())
    metrics.watch(ds, name="val")  # the dataset leads to its sampler and cache
    for plan in sampler:
        ds.__getitems__(plan)  # read in this process (row 0 of the counters)
    _, s = _parse(generate_latest(registry).decode())
    assert _labels(s, "impact_loader_samples_delivered_total", "loader") == {"val"}
    assert _val(s, "impact_loader_samples_delivered_total") == 96
    assert _val(s, "impact_loader_cache_hits_total") \
        + _val(s, "impact_loader_cache_misses_total") == 96
    assert not any(n.startswith("impact_loader_data_wait") for n, _ in s)  # no loader
    with metrics.serve(port=0, registry=registry) as server:  # serves that registry
        _, over_http = _scrape(server.url)
    assert over_http.keys() >= s.keys()
    metrics.unregister(registry)
    assert b"impact_loader_" not in generate_latest(registry)
    ds.close()


def test_own_collector_watching_a_sampler_and_a_stock_dataloader(tmp_path):
    src = il.write_lmdb(str(tmp_path / "d"), make_samples(64))
    ds = il.ImpactDataset(src, transform=_xy, cache_bytes=20 * len(src.read_many([0])[0]))
    sampler = il.ImportanceSampler(ds, batch_size=16, policy="uniform")
    loader = DataLoader(ds, batch_sampler=sampler)
    coll = metrics.ImpactCollector()
    coll.watch(sampler, name="s")
    coll.watch(loader, name="dl")
    assert sum(len(idx) for _, idx in loader) == 64
    registry = CollectorRegistry()
    registry.register(coll)
    _, s = _parse(generate_latest(registry).decode())
    ds.close()
    name = "impact_loader_samples_delivered_total"
    assert _val(s, name, loader="s") == _val(s, name, loader="dl") == 64
    # Only the DataLoader leads to the dataset, hence to the workers' counters.
    assert _labels(s, "impact_loader_cache_misses_total", "loader") == {"dl"}
    assert _val(s, "impact_loader_epoch", loader="s") == 0


def test_watch_holds_weak_references_and_checks_types(tmp_path, clean_metrics):
    src = il.write_lmdb(str(tmp_path / "d"), make_samples(16))
    ds = il.ImpactDataset(src)
    metrics.watch(ds, name="tmp")
    assert metrics.collector().watched() == {"tmp": ds}
    del ds
    gc.collect()
    assert "tmp" not in metrics.collector().watched()
    with pytest.raises(TypeError, match="ImpactLoader"):
        metrics.watch(object())
    with pytest.raises(ValueError, match="port=70000"):
        metrics.serve(port=70000)


def test_nothing_is_served_until_asked():
    assert not _metrics_server._RUNNING


def _exported_names():
    out = set()
    for name, (kind, *_rest) in SPECS.items():
        full = PREFIX + name
        out |= ({full + "_total"} if kind == "counter" else
                {full} if kind == "gauge" else
                {full + "_bucket", full + "_sum", full + "_count"})
    return out


def test_dashboard_and_scrape_config_use_the_exported_names():
    with open(os.path.join(EXAMPLES, "grafana-dashboard.json")) as fh:
        dash = json.load(fh)
    exprs = [t["expr"] for p in dash["panels"] for t in p.get("targets", [])]
    used = {m for e in exprs for m in re.findall(r"\bimpact_loader_[a-z0-9_]+", e)}
    assert used <= _exported_names(), used - _exported_names()
    for key in ("data_wait_seconds_bucket", "data_wait_seconds_sum",
                "samples_delivered_total", "storage_read_bytes_total",
                "storage_request_duration_seconds_bucket", "cache_bytes",
                "cache_capacity_bytes", "cache_hits_total"):
        assert PREFIX + key in used
    with open(os.path.join(EXAMPLES, "prometheus.yml")) as fh:
        config = fh.read()
    targets = re.findall(r"targets:\s*\[([^\]]*)\]", config)
    assert targets and all("127.0.0.1:94" in t for t in targets)


def test_example_script_quick(capsys, clean_metrics):
    path = os.path.join(EXAMPLES, "metrics_training.py")
    spec = importlib.util.spec_from_file_location("metrics_training_example", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert module.main(["--quick", "--samples", "600"]) == 0
    out = capsys.readouterr().out
    assert re.search(r"serving metrics at http://127\.0\.0\.1:\d+/metrics", out)
    assert 'impact_loader_samples_delivered_total{loader="train"' in out


def test_forked_workers_do_not_hold_the_metrics_port(tmp_path, clean_metrics):
    import socket

    src = il.write_lmdb(str(tmp_path / "p"), make_samples(40))
    ds = il.ImpactDataset(src, transform=lambda s: s["label"])
    loader = il.ImpactLoader(ds, batch_size=10, policy="uniform", num_workers=1,
                             multiprocessing_context="fork")
    server = metrics.serve(port=0)
    port = server.port
    for _ in loader:  # the persistent worker forks while the server listens
        pass
    assert loader._iterator._workers[0].is_alive()
    server.close()
    with socket.socket() as s:  # a listening copy in the worker would refuse this
        s.bind(("127.0.0.1", port))
        s.listen()
    ds.close()
