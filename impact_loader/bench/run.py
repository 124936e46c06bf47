"""One loader of a benchmark: its own source stack, dataset, loader, task and counters."""

from __future__ import annotations

import time
from typing import Any, Callable, Dict, List, Optional

import torch
from torch.utils.data import DataLoader, RandomSampler

from ..dataset import ImpactDataset
from ..loader import ImpactLoader
from ..pagecache import evict_page_cache
from ..throttle import ThrottledSource
from .instruments import CountingSource, Timed, cpu_seconds, other_threads_cpu_seconds
from .loaders import LOADERS
from .scenario import Scenario

__all__ = ["LoaderRun", "PlainDataset"]


class PlainDataset:
    """The baseline's map-style dataset: one ``read_many([i])`` per item, decode, transform.

    Args:
        source: the source to read.
        transform: applied to each decoded sample.
    """

    def __init__(self, source: Any, transform: Callable[[Any], Any]) -> None:
        self.source, self.transform = source, transform

    def __len__(self) -> int:
        return len(self.source)

    def __getitem__(self, i: int) -> tuple:
        raw = self.source.read_many([i])[0]
        return self.transform(self.source.decode(bytearray(raw))), i


class LoaderRun:
    """Builds one loader of the comparison and trains ``task`` through it epoch by epoch.

    Args:
        name: a loader name of :data:`LOADERS`.
        scenario: the benchmark's parameters.
        open_source: returns a fresh base source (each loader gets its own).
        cache_bytes: cache budget in bytes (ignored by ``plain``).
        task: the step, a :class:`ModelTask` or :class:`StandInTask`.
        transform: applied to each decoded sample in the workers.
    """

    def __init__(self, name: str, scenario: Scenario, open_source: Callable[[], Any],
                 cache_bytes: int, task: Any, transform: Callable[[Any], Any]) -> None:
        self.name, self.scenario, self.task = name, scenario, task
        self.spec = LOADERS[name]
        self.epochs: List[Dict[str, Any]] = []
        storage = scenario.storage
        self.base = open_source()
        self.throttle = (ThrottledSource(self.base, latency_ms=storage.latency_ms,
                                         bandwidth_mb_s=storage.bandwidth_mb_s,
                                         max_inflight=storage.inflight)
                         if storage.throttled else None)
        self.source = CountingSource(self.throttle or self.base, scenario.start_method)
        kw: Dict[str, Any] = dict(num_workers=scenario.workers)
        if scenario.workers > 0:
            kw["multiprocessing_context"] = scenario.start_method
        self.pipeline = None
        if self.spec.policy is None:
            self.dataset: Any = PlainDataset(self.source, transform)
            gen = torch.Generator().manual_seed(scenario.seed)
            self.loader: Any = DataLoader(self.dataset, batch_size=scenario.batch_size,
                                          sampler=RandomSampler(self.dataset, generator=gen),
                                          **kw)
            return
        cache_options = dict(self.spec.cache_options)
        if scenario.staging_mib is not None:
            cache_options["staging_bytes"] = int(scenario.staging_mib * 2**20)
        self.dataset = ImpactDataset(self.source, transform=transform,
                                     cache_bytes=cache_bytes,
                                     cache_policy=self.spec.cache_policy, **cache_options)
        sampler_options = dict(self.spec.sampler_options)
        if scenario.sampler_warmup_epochs is not None and self.spec.policy == "impact":
            sampler_options["warmup_epochs"] = scenario.sampler_warmup_epochs
        self.loader = ImpactLoader(self.dataset, scenario.batch_size, policy=self.spec.policy,
                                   seed=scenario.seed, sampler_options=sampler_options, **kw)
        self.pipeline = self.dataset.pipeline
        self.update = Timed(self.loader.update)  # the sampler's share of the loop

    @property
    def cached(self) -> bool:
        """Whether this loader runs impact-loader's cache pipeline."""
        return self.pipeline is not None

    def _counters(self) -> Dict[str, float]:
        c: Dict[str, float] = dict(self.source.snapshot())
        if self.spec.policy is not None:
            s = self.loader.stats()
            for k in ("planned", "hits", "substitutions", "prefetched", "waited_batches",
                      "storage_requests", "storage_bytes", "bookkeeping_cpu_s",
                      "annotate_cpu_s", "hook_cpu_s", "prefetch_cpu_s", "hook_s",
                      "service_cpu_s"):
                c[k] = s.get(k, 0)
            c["update_s"] = self.update.seconds
            c["update_cpu_s"] = self.update.cpu_seconds
        if self.cached:
            c["thread_cpu_s"] = other_threads_cpu_seconds()
            d = self.dataset.directory.counts
            for k in ("admitted", "evicted", "filled", "abandoned", "staged"):
                c["cache_" + k] = d.get(k, 0)
        return c

    def run_epoch(self, epoch: int, progress: Optional[Any] = None) -> Dict[str, Any]:
        """Train one epoch; returns its figures (deltas of every counter, times)."""
        impact = self.spec.policy is not None
        if impact:
            self.loader.set_epoch(epoch)
        if self.scenario.storage.cold:
            evict_page_cache(self.base)
        before = self._counters()
        waits: List[float] = []
        delivered, compute = 0, 0.0
        cpu0 = cpu_seconds()
        start = time.perf_counter()
        it = iter(self.loader)
        while True:
            t = time.perf_counter()
            try:
                batch, idx = next(it)
            except StopIteration:
                break
            t1 = time.perf_counter()
            waits.append(t1 - t)
            w = self.loader.sampler.weights(idx) if self.spec.learns else None
            losses = self.task.step(batch, w, epoch, idx)
            if impact:
                self.update(idx, losses)
            compute += time.perf_counter() - t1
            delivered += len(idx)
            if progress is not None:
                progress.update(len(idx))
        seconds = time.perf_counter() - start
        cpu1 = cpu_seconds()
        after = self._counters()
        rec: Dict[str, Any] = {k: after[k] - before[k] for k in after}
        rec.update(epoch=epoch, seconds=seconds, delivered=delivered,
                   trained_fraction=delivered / len(self.source), data_wait_s=sum(waits),
                   compute_s=compute, batches=len(waits), main_cpu_s=cpu1[0] - cpu0[0],
                   worker_cpu_s=cpu1[1] - cpu0[1])
        # A cache service process is a child too: count it apart from the workers.
        rec["worker_cpu_s"] -= rec.get("service_cpu_s", 0.0)
        if self.cached:
            rec["lookahead_batches"] = self.pipeline.prefetcher.lookahead()
        self.epochs.append(rec)
        return rec

    def close(self) -> None:
        """Release the dataset's cache and the sources."""
        if self.spec.policy is not None:
            self.dataset.close()
        close = getattr(self.base, "close", None)
        if close is not None:
            close()
