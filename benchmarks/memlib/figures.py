"""Figures and targets from the two runs (N and N/8): growth, slopes, verdicts."""

from __future__ import annotations

from typing import Dict, List, Optional

__all__ = ["TARGET_BYTES_PER_SAMPLE", "MAIN_KINDS", "SERVICE_KINDS", "MALLOC_KINDS",
           "growth", "figures",
           "malloc_slopes", "structure_slopes", "targets"]

TARGET_BYTES_PER_SAMPLE = 100
#: Worker growth (private bytes) from the end of epoch 1 to the last epoch that still
#: counts as flat: a Python list of N objects costs at least its 8-byte pointer per
#: sample once copied, so copy-on-read growth shows well above this.
FLAT_BYTES_PER_SAMPLE = 4
FLAT_FLOOR_BYTES = 2 << 20  # allocator noise a short run cannot tell from growth


def growth(run: dict) -> Dict[str, float]:
    """Bytes the run grew by, at the largest epoch-end snapshot, per kind."""
    b, budget = run["before"], run["budget_bytes"]
    mains = [e["main"] for e in run["epochs"]]

    def peak(fn) -> int:
        return max(fn(m) for m in mains)

    def d(m: dict, key: str) -> int:
        return m[key] - b[key]

    g = {"rss": peak(lambda m: d(m, "rss")),
         "beyond_budget": peak(lambda m: d(m, "rss") - budget),
         "beyond_budget_excl_source": peak(lambda m: d(m, "rss") - d(m, "source_rss")
                                           - budget),
         "metadata": peak(lambda m: d(m, "rss") - d(m, "source_rss") - d(m, "memfd_rss")
                          - d(m, "shm_rss")),
         "anon": peak(lambda m: d(m, "rss_anon")),
         "memfd": peak(lambda m: m["memfd_rss"]),
         "source": peak(lambda m: m["source_rss"]),
         "peak": max(m["hwm"] for m in mains) - b["rss"]}
    t = run.get("trimmed") or mains[-1]
    g["metadata_after_trim"] = (d(t, "rss") - d(t, "source_rss") - d(t, "memfd_rss")
                                - d(t, "shm_rss"))
    series: Dict[int, List[dict]] = {}
    for e in run["epochs"]:
        for i, w in enumerate(e["workers"]):
            series.setdefault(i, []).append(w)

    def private(w: dict) -> int:
        return w["rss"] - w["memfd_rss"] - w["source_rss"] - w["shm_rss"]

    def grew(fn) -> int:
        return max((fn(s[-1]) - fn(s[0]) for s in series.values()), default=0)

    g["worker_uss"] = grew(lambda w: w["uss"])
    g["worker_rss"] = grew(lambda w: w["rss"])
    g["worker_anon_private"] = grew(lambda w: w["anon_private"])
    g["worker_rss_excl_shared"] = grew(private)
    # Copy-on-read shows as anonymous pages turning private (RSS unchanged after fork);
    # memory a worker allocates shows in both. USS also counts page-cache pages of the
    # files only this worker maps (its own LMDB mapping), which are not copies.
    g["worker_growth"] = max(g["worker_anon_private"], g["worker_rss_excl_shared"])
    # The cache service's own memory: anonymous pages private to it (what it allocated,
    # the directory's arrays, and inherited pages it wrote to). None without a service.
    services = [e.get("service") for e in run["epochs"]]
    g["service_private"] = (max(s["anon_private"] for s in services)
                            if services and all(services) else None)
    if g["service_private"] is not None:
        g["with_service"] = g["metadata"] + g["service_private"]
    return g


MAIN_KINDS = ("rss", "beyond_budget", "beyond_budget_excl_source", "metadata", "anon",
              "peak", "metadata_after_trim")
#: With the cache service: its private memory, and the main process's metadata plus it.
SERVICE_KINDS = ("service_private", "with_service")


def figures(small: dict, large: dict) -> dict:
    """Per-sample figures: at N, and per additional sample between the two runs."""
    n_s, n_l = small["samples"], large["samples"]
    g_s, g_l = growth(small), growth(large)
    out = {"small": g_s, "large": g_l, "per_sample": {}}
    kinds = MAIN_KINDS + tuple(k for k in SERVICE_KINDS
                               if g_s.get(k) is not None and g_l.get(k) is not None)
    for k in kinds:
        slope = (g_l[k] - g_s[k]) / (n_l - n_s)
        out["per_sample"][k] = {"at_n": g_l[k] / n_l, "slope": slope,
                                "fixed_bytes": g_s[k] - slope * n_s}
    out["flat_limit_bytes"] = max(FLAT_BYTES_PER_SAMPLE * n_l, FLAT_FLOOR_BYTES)
    out["malloc"] = malloc_slopes(small, large)
    return out


MALLOC_KINDS = ("main_sys", "main_free", "threads_sys", "threads_free")


def malloc_slopes(small: dict, large: dict) -> Dict[str, dict]:
    """glibc arenas at the last epoch of each run: MiB, and bytes per additional sample
    (empty off glibc, or for reports made before the arenas were recorded)."""
    a, b = (run["epochs"][-1].get("malloc") or {} for run in (small, large))
    if not a or not b:
        return {}
    n = large["samples"] - small["samples"]
    return {k: {"small": a[k], "large": b[k], "slope": (b[k] - a[k]) / n}
            for k in MALLOC_KINDS}


def structure_slopes(small: dict, large: dict, min_per_sample: float = 0.25) -> List[dict]:
    """What each structure costs per additional sample (bytes, between the two runs)."""
    n_s, n_l = small["samples"], large["samples"]
    before = {r["path"]: r["bytes"] for r in small["structures"]}
    rows = []
    for r in large["structures"]:
        slope = (r["bytes"] - before.get(r["path"], 0)) / (n_l - n_s)
        if abs(slope) >= min_per_sample or r["bytes"] / n_l >= 1:
            rows.append(dict(r, slope=slope, at_n=r["bytes"] / n_l))
    return rows


def targets(small: dict, large: dict, fig: dict, killed: Optional[dict]) -> List[dict]:
    """The memory targets, each with the figure that decides it, met or not.

    Target 1 is given three ways (see the module docstring for the kinds of mapping);
    target 2 two ways (RSS without shared mappings; copy-on-write, i.e. inherited
    anonymous pages turned private); target 3 after ``dataset.close()`` and after a
    SIGKILL.
    """
    ps, n, limit = fig["per_sample"], large["samples"], TARGET_BYTES_PER_SAMPLE
    g = fig["large"]
    cache_ok = g["memfd"] <= large["budget_bytes"] + large["store_meta_bytes"] + (1 << 20)
    steps = [{s["step"]: s for s in run["cleanup"]} for run in (small, large)]
    closed = [st["dataset.close()"] for st in steps]
    dropped = [st["del loader; gc.collect()"] for st in steps]
    after = [s for run in (small, large) for s in run["cleanup"][1:]]
    fds = max(s["memfd_fds"] for s in closed)
    shm = sorted({x for s in after for x in s["new_shm"]})
    stray = max(max(s["workers_alive"] for s in after), max(s["extra_threads"] for s in closed))
    has_workers = bool(large["epochs"][0]["workers"])
    flat = fig["flat_limit_bytes"]
    flat_text = f"<= max({FLAT_BYTES_PER_SAMPLE} B/sample, {FLAT_FLOOR_BYTES >> 20} MiB)"
    return [
        {"target": f"1. main RSS beyond the cache budget <= {limit} B/sample at N={n}, "
                   "as written (total RSS, fixed costs included)",
         "figure": f"{ps['beyond_budget']['at_n']:.1f} B/sample",
         "met": ps["beyond_budget"]["at_n"] <= limit},
        {"target": "1. same without the source's page cache (LMDB pages the prefetch "
                   "threads mapped)",
         "figure": f"{ps['beyond_budget_excl_source']['at_n']:.1f} B/sample (LMDB pages "
                   f"{g['source'] / n:.0f} B/sample)",
         "met": ps["beyond_budget_excl_source"]["at_n"] <= limit and cache_ok},
        {"target": "1. metadata per additional sample (RSS without memfd cache, LMDB page "
                   "cache and torch shm; slope between the runs); memfd within budget",
         "figure": f"{ps['metadata']['slope']:.1f} B/sample + "
                   f"{ps['metadata']['fixed_bytes'] / 2**20:.1f} MiB fixed (after "
                   f"malloc_trim: {ps['metadata_after_trim']['slope']:.1f}); memfd "
                   f"{g['memfd'] / 2**20:.1f} of {large['budget_bytes'] / 2**20:.1f} MiB",
         "met": ps["metadata"]["slope"] <= limit and cache_ok},
        *([{"target": "1. metadata per additional sample, main process plus the cache "
                      "service process's private memory (the directory lives there)",
            "figure": f"{ps['with_service']['slope']:.1f} B/sample (service "
                      f"{ps['service_private']['slope']:.1f}) + "
                      f"{ps['with_service']['fixed_bytes'] / 2**20:.1f} MiB fixed",
            "met": ps["with_service"]["slope"] <= limit}] if "with_service" in ps else []),
        {"target": f"2. worker RSS flat from epoch 1 to {len(large['epochs'])}, shared "
                   f"mappings (memfd cache, LMDB, torch shm) left out, {flat_text}",
         "figure": f"{g['worker_rss_excl_shared'] / 2**20:+.2f} MiB (raw RSS "
                   f"{g['worker_rss'] / 2**20:+.2f} MiB: pages of the shared cache and "
                   "the LMDB file it touched)",
         "met": has_workers and g["worker_rss_excl_shared"] <= flat},
        {"target": f"2. worker copy-on-write: inherited pages turned private, {flat_text}",
         "figure": f"{g['worker_anon_private'] / 2**20:+.2f} MiB per worker (N={small['samples']}"
                   f": {fig['small']['worker_anon_private'] / 2**20:+.2f} MiB)",
         "met": has_workers and g["worker_anon_private"] <= flat},
        {"target": "3. nothing left after del loader + dataset.close() (memfd fds, our "
                   "/dev/shm names, workers, threads)",
         "figure": f"memfd fds {fds:+d}, /dev/shm {shm or 'none'}, workers/threads "
                   f"{stray:+d} (after del loader alone: threads "
                   f"{max(s['extra_threads'] for s in dropped):+d}, memfd fds "
                   f"{max(s['memfd_fds'] for s in dropped):+d}, kept by the dataset)",
         "met": fds <= 0 and not shm and stray <= 0},
        {"target": "3. SIGKILLed owner with workers: workers exit, no /dev/shm name or "
                   "descriptor left",
         "figure": "skipped" if killed is None else "clean" if killed["ok"] else
                   f"NOT clean: {killed}",
         "met": killed is not None and killed["ok"]},
    ]
