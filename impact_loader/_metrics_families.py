"""The metrics impact-loader exports: one table of names, types, help texts and labels.

Kept apart from the collector so the catalogue reads in one place (README, dashboards
and the tests use these exact names). Names follow the Prometheus conventions: the
``impact_loader_`` prefix, base units (seconds, bytes) in the name, counters exported
with ``_total``, histograms as ``_bucket``/``_sum``/``_count``.
"""

from __future__ import annotations

from typing import Dict, Iterator, List, Sequence, Tuple

from prometheus_client.core import (CounterMetricFamily, GaugeMetricFamily,
                                    HistogramMetricFamily, Metric)

__all__ = ["PREFIX", "COMMON_LABELS", "SPECS", "Families"]

PREFIX = "impact_loader_"
# Every sample carries the watch name and the rank (one endpoint per rank under DDP).
COMMON_LABELS = ("loader", "rank")

_READER = ("reader",)
_TIER = ("tier",)

# name (without prefix; counters without _total) -> (type, unit, extra labels, help)
SPECS: Dict[str, Tuple[str, str, Sequence[str], str]] = {
    "samples_delivered": (
        "counter", "", ("source",),
        "Samples handed to the DataLoader, by where their bytes were when the batch was "
        "planned: cache_hit (already in the cache), substitution (a cached L-sample "
        "delivered in place of a missed one), storage (read from storage for this "
        "batch, by the prefetcher or a worker)."),
    "substitutions": (
        "counter", "", (),
        "Missed L-samples replaced by a cached, not yet used L-sample."),
    "cache_hits": (
        "counter", "", _TIER,
        "Samples DataLoader workers copied out of the shared cache, by plan tier (h, l; "
        "none for policies without tiers); bytes prefetched for their batch count."),
    "cache_misses": (
        "counter", "", _TIER,
        "Samples DataLoader workers read from storage, by plan tier."),
    "cache_fallbacks": (
        "counter", "", (),
        "Samples planned in the cache whose bytes were gone when a worker looked "
        "(evicted, reused or not yet written); read from storage instead."),
    "cache_admissions": (
        "counter", "", (), "Samples admitted to the cache."),
    "cache_evictions": (
        "counter", "", (), "Samples evicted from the cache."),
    "cache_abandoned": (
        "counter", "", (),
        "Cache reservations given up because the record did not fit when its bytes "
        "arrived (a worker then reads the sample from storage)."),
    "storage_requests": (
        "counter", "", _READER,
        "read_many calls to the source, by reader: prefetcher (main-process threads, or "
        "the cache service process) or "
        "dataset (DataLoader workers; the main process with num_workers=0)."),
    "storage_samples": (
        "counter", "", _READER, "Records read from the source, by reader."),
    "storage_read_bytes": (
        "counter", "bytes", _READER, "Bytes read from the source, by reader."),
    "storage_retries": (
        "counter", "", (), "Prefetch reads retried after an OSError."),
    "storage_request_duration_seconds": (
        "histogram", "seconds", _READER,
        "Latency of one read_many call to the source, by reader."),
    "prefetch_waited_batches": (
        "counter", "", (),
        "Batches whose prefetched reads had not all landed when the DataLoader asked "
        "for them (the loader stalled on storage)."),
    "prefetch_lookahead_batches": (
        "gauge", "", (), "Batches the prefetcher plans to stay ahead of the DataLoader."),
    "prefetch_pending_reads": (
        "gauge", "", (), "Prefetch read jobs queued or in flight."),
    "data_wait_seconds": (
        "histogram", "seconds", (),
        "Time the training loop waited for each batch (ImpactLoader only)."),
    "data_wait_share": (
        "gauge", "", (),
        "Share of the current or last epoch's time, from iter() to the latest batch, "
        "that the training loop waited for batches "
        "(ImpactLoader only)."),
    "cache_bytes": (
        "gauge", "bytes", _TIER,
        "Record bytes held per cache pool: h, l, staging (baseline policies use h)."),
    "cache_capacity_bytes": (
        "gauge", "bytes", _TIER, "Capacity per cache pool."),
    "cache_entries": (
        "gauge", "", _TIER,
        "Records held per cache pool (including evicted ones not yet freed)."),
    "epoch": ("gauge", "", (), "Current epoch of the sampler."),
    "trained_fraction": (
        "gauge", "", (),
        "Share of the data set in the current epoch's plan (all ranks together)."),
    "importance": (
        "gauge", "", ("quantile",),
        "Importance score quantiles over the data set (above 65536 samples, over an "
        "evenly strided subset)."),
    "scored_fraction": (
        "gauge", "", (), "Share of samples with at least one reported loss."),
    "dataset_samples": ("gauge", "", (), "Samples in the data set."),
    "losses_received": (
        "counter", "", (), "Per-sample losses received by sampler.update()."),
}


class Families:
    """Metric families of one scrape, filled sample by sample, in :data:`SPECS` order."""

    def __init__(self) -> None:
        self._families: Dict[str, Metric] = {}
        for name, (kind, unit, labels, doc) in SPECS.items():
            full = PREFIX + name
            labels = list(COMMON_LABELS) + list(labels)
            if kind == "counter":
                fam = CounterMetricFamily(full, doc, labels=labels, unit=unit)
            elif kind == "gauge":
                fam = GaugeMetricFamily(full, doc, labels=labels, unit=unit)
            else:
                fam = HistogramMetricFamily(full, doc, labels=labels, unit=unit)
            self._families[name] = fam

    def add(self, name: str, common: Sequence[str], value: float,
            *extra: str) -> None:
        """Add one counter or gauge sample (``extra``: the family's own labels)."""
        self._families[name].add_metric(list(common) + list(extra), value)

    def add_histogram(self, name: str, common: Sequence[str],
                      buckets: List[Tuple[str, int]], sum_seconds: float,
                      *extra: str) -> None:
        """Add one histogram from cumulative ``(le, count)`` buckets and their sum."""
        self._families[name].add_metric(list(common) + list(extra), buckets, sum_seconds)

    def __iter__(self) -> Iterator[Metric]:
        return iter(self._families.values())
