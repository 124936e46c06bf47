"""ImpactCollector: reads the live loader, sampler, dataset and cache at scrape time.

Nothing here runs on the training path: the hot paths only bump plain integers (the
pipeline's counts, the prefetcher's counters and latency buckets, the loader's
data-wait buckets, the workers' shared :class:`~impact_loader.counters.WorkerCounters`),
and :meth:`ImpactCollector.collect` turns them into Prometheus metric families when a
scrape arrives (on the HTTP server's thread). Watched objects are held by weak
reference: watching never keeps a loader, its workers or its shared memory alive.
"""

from __future__ import annotations

import threading
import weakref
from typing import Any, Dict, Iterator, Sequence

import numpy as np

__all__ = ["ImpactCollector"]

_QUANTILES = (0.1, 0.5, 0.9)
_QUANTILE_SAMPLES = 65536
_TIERS = ("none", "h", "l")
_POOL_NAMES = {1: "h", 2: "l", 3: "staging"}  # LOC_H, LOC_L, LOC_STAGING


class _Parts:
    """The objects one watch resolves to at scrape time (any may be None)."""

    __slots__ = ("loader", "sampler", "dataset", "pipeline", "directory")

    def __init__(self, obj: Any) -> None:
        from torch.utils.data import DataLoader

        from .dataset import ImpactDataset
        from .sampler import ImportanceSampler

        self.loader = self.sampler = self.dataset = None
        if isinstance(obj, DataLoader):
            self.loader = obj
            self.dataset = obj.dataset
            sampler = getattr(obj, "batch_sampler", None)
            self.sampler = sampler if isinstance(sampler, ImportanceSampler) else None
        elif isinstance(obj, ImportanceSampler):
            self.sampler = obj
        elif isinstance(obj, ImpactDataset):
            self.dataset = obj
        pipeline = getattr(self.dataset, "pipeline", None)
        if pipeline is None and self.sampler is not None:
            annotator = self.sampler.annotator
            pipeline = annotator if hasattr(annotator, "prefetcher") else None
        self.pipeline = pipeline
        if self.sampler is None and pipeline is not None:
            self.sampler = pipeline.sampler
        if self.dataset is not None:
            self.directory = self.dataset.directory  # None once the dataset is closed
        else:
            self.directory = getattr(pipeline, "directory", None)


def _check_watchable(obj: Any) -> None:
    """Raise TypeError unless ``obj`` is something :meth:`ImpactCollector.watch` takes."""
    from torch.utils.data import DataLoader

    from .dataset import ImpactDataset
    from .sampler import ImportanceSampler

    if not isinstance(obj, (DataLoader, ImportanceSampler, ImpactDataset)):
        raise TypeError(f"cannot watch {type(obj).__name__}; pass an ImpactLoader (best: "
                        "it adds data-wait), an ImportanceSampler, an ImpactDataset or a "
                        "DataLoader over one")


class ImpactCollector:
    """A Prometheus collector over watched loaders, samplers and datasets.

    Register it on any ``CollectorRegistry`` (``registry.register(collector)``) or use
    :func:`impact_loader.metrics.register`. Each watch is a *name* (the ``loader``
    label) bound to one object by weak reference; every metric carries that name and
    the sampler's ``rank``.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._watched: Dict[str, weakref.ref] = {}

    def watch(self, obj: Any, *, name: str = "train") -> None:
        """Observe ``obj`` under ``name`` (replacing what ``name`` observed before).

        Args:
            obj: an ImpactLoader (everything, including data-wait), an ImpactDataset
                (cache, workers, and the sampler attached to it), an ImportanceSampler
                (sampler and pipeline, no worker counts), or a DataLoader over an
                ImpactDataset.
            name: value of the ``loader`` label, e.g. ``"train"`` or ``"val"``.

        Raises:
            TypeError: ``obj`` is none of the above, or ``name`` is not a str.
        """
        _check_watchable(obj)
        if not isinstance(name, str) or not name:
            raise TypeError(f"name={name!r} must be a non-empty str, e.g. 'train'")
        with self._lock:
            self._watched[name] = weakref.ref(obj)

    def unwatch(self, name: str = "train") -> None:
        """Stop observing ``name`` (no error if it was not watched)."""
        with self._lock:
            self._watched.pop(name, None)

    def watched(self) -> Dict[str, Any]:
        """The live watched objects by name (dead references are dropped)."""
        with self._lock:
            live = {n: r() for n, r in self._watched.items()}
            for n in [n for n, o in live.items() if o is None]:
                del self._watched[n]
        return {n: o for n, o in live.items() if o is not None}

    # ------------------------------------------------------------------ prometheus
    def describe(self) -> Iterator[Any]:
        """The metric families without samples (lets a registry detect duplicates)."""
        from ._metrics_families import Families

        return iter(Families())

    def collect(self) -> Iterator[Any]:
        """Read every watched object now and yield the metric families."""
        from ._metrics_families import Families

        fams = Families()
        for name, obj in sorted(self.watched().items()):
            _collect_one(fams, name, _Parts(obj))
        return iter(fams)


def _collect_one(fams: Any, name: str, parts: _Parts) -> None:
    sampler, pipeline = parts.sampler, parts.pipeline
    rank = str(getattr(sampler, "rank", 0))
    common = (name, rank)
    counters = getattr(parts.dataset, "counters", None)
    totals = counters.totals() if counters is not None else None
    if pipeline is not None:
        p = pipeline.stats()
        hits, subs = p["hits"], p["substitutions"]
        fams.add("samples_delivered", common, hits, "cache_hit")
        fams.add("samples_delivered", common, subs, "substitution")
        fams.add("samples_delivered", common, p["planned"] - hits - subs, "storage")
        fams.add("substitutions", common, subs)
        fams.add("prefetch_waited_batches", common, p["waited_batches"])
        _prefetcher(fams, common, pipeline.prefetcher)
    elif totals is not None:  # no cache: every sample comes from storage
        fams.add("samples_delivered", common, sum(totals[f"misses_{t}"] for t in _TIERS),
                 "storage")
    if totals is not None:
        _workers(fams, common, counters, totals)
    if parts.directory is not None:
        _cache(fams, common, parts.directory)
    if sampler is not None:
        _sampler(fams, common, sampler)
    hist = getattr(parts.loader, "data_wait_histogram", None)
    if hist is not None:
        fams.add_histogram("data_wait_seconds", common, *hist.snapshot())
        fams.add("data_wait_share", common, parts.loader.data_wait_share)


def _prefetcher(fams: Any, common: Sequence[str], pf: Any) -> None:
    fams.add("storage_requests", common, pf.requests, "prefetcher")
    fams.add("storage_samples", common, pf.samples_read, "prefetcher")
    fams.add("storage_read_bytes", common, pf.bytes_read, "prefetcher")
    fams.add("storage_retries", common, pf.retried)
    fams.add_histogram("storage_request_duration_seconds", common,
                       *pf.latency.snapshot(), "prefetcher")
    fams.add("prefetch_lookahead_batches", common, pf.lookahead())
    fams.add("prefetch_pending_reads", common, pf.pending)


def _workers(fams: Any, common: Sequence[str], counters: Any,
             t: Dict[str, int]) -> None:
    from ._metrics_histogram import cumulative

    for tier in _TIERS:
        fams.add("cache_hits", common, t[f"hits_{tier}"], tier)
        fams.add("cache_misses", common, t[f"misses_{tier}"], tier)
    fams.add("cache_fallbacks", common, t["fallbacks"])
    fams.add("storage_requests", common, t["source_requests"], "dataset")
    fams.add("storage_samples", common, t["source_samples"], "dataset")
    fams.add("storage_read_bytes", common, t["source_bytes"], "dataset")
    fams.add_histogram("storage_request_duration_seconds", common,
                       *cumulative(counters.latency_counts(), t["source_ns"] / 1e9),
                       "dataset")


def _cache(fams: Any, common: Sequence[str], directory: Any) -> None:
    d = directory.stats()
    fams.add("cache_admissions", common, d.get("admitted", 0))
    fams.add("cache_evictions", common, d.get("evicted", 0))
    fams.add("cache_abandoned", common, d.get("abandoned", 0))
    pools = sorted(int(k[4:-len("_used_bytes")]) for k in d
                   if k.startswith("pool") and k.endswith("_used_bytes"))
    for pool in pools:
        tier = _POOL_NAMES.get(pool, str(pool))
        fams.add("cache_bytes", common, d[f"pool{pool}_used_bytes"], tier)
        fams.add("cache_capacity_bytes", common, d[f"pool{pool}_capacity_bytes"], tier)
        fams.add("cache_entries", common, d[f"pool{pool}_entries"], tier)


def _sampler(fams: Any, common: Sequence[str], sampler: Any) -> None:
    n = sampler.num_samples
    fams.add("epoch", common, sampler.epoch)
    fams.add("dataset_samples", common, n)
    # Not sampler.stats(): it drains CUDA reports, which only the training thread may do.
    counts = getattr(getattr(sampler, "_stats", None), "counts", None) or {}
    fams.add("losses_received", common, counts.get("losses_received", 0))
    plan = getattr(sampler, "_plan", None)  # built by the training thread, read only
    if plan is not None and plan.epoch == sampler.epoch:
        fams.add("trained_fraction", common, plan.selection.indices.size / n)
    table = sampler.table
    fams.add("scored_fraction", common, table.num_scored / n)
    imp = table.importance()[::max(1, n // _QUANTILE_SAMPLES)]
    for q, v in zip(_QUANTILES, np.quantile(imp, _QUANTILES).tolist()):
        fams.add("importance", common, v, repr(q))
