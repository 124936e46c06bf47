"""From measured epochs to the figures of the report: medians, ratios, the physical bound.

The bound is DESIGN.md's "physical limit" for one epoch, computed from what the epoch
really did: trained fraction f, request hit ratio h (substitutions count as hits) and
the mean contiguous run length of the storage requests k_eff (1 for random reads, up to
the package size for packages):

    T >= max(f·N / X_compute,  f·N·(1-h)·s / B,  f·N·(1-h)·L / (Q·k_eff))
"""

from __future__ import annotations

import math
import statistics
from typing import Any, Dict, List

from .scenario import Scenario

__all__ = ["bound_terms", "summarize", "add_ratios", "TARGETS", "check_targets"]


def bound_terms(rec: Dict[str, Any], n: int, scenario: Scenario, record: float,
                x_compute: float, package: int) -> Dict[str, float]:
    """The three terms of the bound for epoch ``rec``, the bound, and its inputs.

    Also ``issued_io``: the storage time of the requests the loader really issued at
    full queue depth, which tells how well the I/O engine used the storage apart
    from how few requests its strategy needed.
    """
    f = rec["trained_fraction"]
    planned = rec.get("planned", 0)
    h = (rec.get("hits", 0) + rec.get("substitutions", 0)) / planned if planned else 0.0
    read = (rec["main_bytes"] + rec["worker_bytes"]) / record
    runs = rec["main_runs"] + rec["worker_runs"]
    k_eff = min(float(package), max(1.0, read / runs)) if runs else 1.0
    compute = f * n / x_compute
    st = scenario.storage
    if st.throttled:
        bandwidth = f * n * (1 - h) * record / (st.bandwidth_mb_s * 1e6)
        latency = f * n * (1 - h) * (st.latency_ms / 1e3) / (st.inflight * k_eff)
        issued = max(runs * (st.latency_ms / 1e3) / st.inflight,
                     read * record / (st.bandwidth_mb_s * 1e6))
    else:  # real storage: no model of its latency, only compute is bounded
        bandwidth = latency = issued = 0.0
    return {"h": h, "f": f, "k_eff": k_eff, "compute": compute, "bandwidth": bandwidth,
            "latency": latency, "bound": max(compute, bandwidth, latency),
            "issued_io": issued}


def summarize(run: Any, scenario: Scenario, *, n: int, record: float, x_compute: float,
              package: int, accuracy: float) -> Dict[str, Any]:
    """One report row for ``run``: medians over its measured epochs, totals per epoch."""
    measured = run.epochs[scenario.warmup:]
    times = [r["seconds"] for r in measured]
    bounds = [bound_terms(r, n, scenario, record, x_compute, package) for r in measured]
    tot = {k: sum(r.get(k, 0) for r in measured) for k in measured[0]
           if isinstance(measured[0][k], (int, float))}
    planned = tot.get("planned", 0)
    delivered = max(1, tot["delivered"])
    e = len(measured)
    # Main-process CPU of sampler + prefetcher: the pipeline's own CPU accounting
    # (annotation and releases, the sampler hook, reader threads outside read_many)
    # plus update()'s CPU. update()'s wall time also holds its waits for the GIL while
    # the background threads run: that is data-wait, not bookkeeping CPU.
    bookkeeping = tot.get("bookkeeping_cpu_s", 0) + tot.get("update_cpu_s", 0)
    spec = run.spec
    return {
        "loader": run.name, "description": spec.description, "policy": spec.policy,
        "cache_policy": spec.cache_policy,
        "sampler_warmup_epochs": (scenario.sampler_warmup_epochs
                                  if spec.policy == "impact" else None),
        "epoch_seconds": [r["seconds"] for r in run.epochs],
        "trained_fraction": [r["trained_fraction"] for r in run.epochs],
        "median_epoch_s": statistics.median(times),
        "samples_per_s": statistics.median(r["delivered"] / r["seconds"] for r in measured),
        "hit_ratio": tot.get("hits", 0) / planned if planned else 0.0,
        "substitution_ratio": tot.get("substitutions", 0) / planned if planned else 0.0,
        "requests_per_epoch": (tot["main_runs"] + tot["worker_runs"]) / e,
        "requests_main_per_epoch": tot["main_runs"] / e,
        "requests_workers_per_epoch": tot["worker_runs"] / e,
        "mb_per_epoch": (tot["main_bytes"] + tot["worker_bytes"]) / e / 1e6,
        "mb_main_per_epoch": tot["main_bytes"] / e / 1e6,
        "mb_workers_per_epoch": tot["worker_bytes"] / e / 1e6,
        "waited_batches_per_epoch": tot.get("waited_batches", 0) / e,
        "cache_per_epoch": {k[6:]: tot[k] / e for k in tot if k.startswith("cache_")},
        "lookahead_batches": [r.get("lookahead_batches") for r in measured],
        "data_wait_share": tot["data_wait_s"] / tot["seconds"],
        "main_cpu_share": tot["main_cpu_s"] / tot["seconds"],
        "worker_cpu_share": tot["worker_cpu_s"] / tot["seconds"],
        "background_cpu_share": tot.get("thread_cpu_s", 0) / tot["seconds"],
        # The cache service process (cache_service=True): all of its CPU, reads too.
        "service_cpu_share": tot.get("service_cpu_s", 0) / tot["seconds"],
        "bookkeeping_us_per_sample": (1e6 * bookkeeping / delivered
                                      if run.cached else math.nan),
        "bound_s": statistics.median(b["bound"] for b in bounds),
        "bound_terms": bounds,
        "ratio_to_bound": statistics.median(t / b["bound"] for t, b in zip(times, bounds)),
        "test_accuracy": accuracy,
        "epochs": run.epochs,
    }


def add_ratios(rows: List[Dict[str, Any]]) -> None:
    """Add speedup and throughput ratios against the ``plain`` row (NaN without it)."""
    base = next((r for r in rows if r["loader"] == "plain"), None)
    for r in rows:
        r["speedup_vs_plain"] = (base["median_epoch_s"] / r["median_epoch_s"]
                                 if base else math.nan)
        r["throughput_vs_plain"] = (r["samples_per_s"] / base["samples_per_s"]
                                    if base else math.nan)


# (key, what it means, test) for the end-to-end issue's targets on impact's row.
TARGETS = (
    ("impact_vs_plain", ">= 5x faster than plain DataLoader", lambda v: v >= 5),
    ("impact_vs_minio", ">= 2x faster than uniform+MinIO", lambda v: v >= 2),
    ("impact_ratio_to_bound", "within 1.25x of the physical bound", lambda v: v <= 1.25),
    ("impact_accuracy_minus_uniform_points", "accuracy within 1 point of uniform",
     lambda v: v >= -1),
    ("impact_data_wait_share", "data-wait share of the epoch", None),
    ("impact_bookkeeping_us_per_sample", "main-process bookkeeping < 10 us/sample",
     lambda v: v < 10),
)


def check_targets(rows: List[Dict[str, Any]]) -> Dict[str, Any]:
    """Target figures of the ``impact`` row against the baselines present."""
    by = {r["loader"]: r for r in rows}
    d = by.get("impact")
    out: Dict[str, Any] = {}
    if d is None:
        return out
    if "plain" in by:
        out["impact_vs_plain"] = by["plain"]["median_epoch_s"] / d["median_epoch_s"]
    if "minio" in by:
        out["impact_vs_minio"] = by["minio"]["median_epoch_s"] / d["median_epoch_s"]
    out["impact_ratio_to_bound"] = d["ratio_to_bound"]
    uniform = [by[k]["test_accuracy"] for k in ("plain", "minio", "lru", "quiver")
               if k in by and not math.isnan(by[k]["test_accuracy"])]
    if uniform and not math.isnan(d["test_accuracy"]):
        out["impact_accuracy_minus_uniform_points"] = 100 * (d["test_accuracy"]
                                                             - max(uniform))
    out["impact_data_wait_share"] = d["data_wait_share"]
    out["impact_bookkeeping_us_per_sample"] = d["bookkeeping_us_per_sample"]
    return out
