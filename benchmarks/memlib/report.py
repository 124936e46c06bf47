"""The printed report: per-epoch tables, per-sample figures, structures, targets."""

from __future__ import annotations

import json

from .figures import MAIN_KINDS, SERVICE_KINDS, structure_slopes

__all__ = ["print_run", "print_report"]


def print_run(run: dict) -> None:
    """Per-epoch table of one run (main process and workers) and its cleanup steps."""
    n, mib, b = run["samples"], 2 ** 20, run["before"]
    print(f"\nN={n} records of {run['record_bytes']:.0f} B; cache "
          f"{run['cache_bytes'] / mib:.1f} MiB + staging {run['staging_bytes'] / mib:.1f} "
          f"MiB = budget {run['budget_bytes'] / mib:.1f} MiB; {run['store_slots']} store "
          f"slots, store metadata (memfd) {run['store_meta_bytes'] / mib:.2f} MiB")
    head = (f"{'snapshot':>9} {'s':>5} {'RSS':>7} {'anon':>7} {'memfd':>6} {'source':>6} "
            f"{'shm':>5} {'USS':>7} {'PSS':>7} {'RSS-budget':>10} {'metadata':>9}"
            "  workers RSS/anon private")
    print(head + "\n" + "-" * len(head))
    rows = [("before", None, b, []), ("built", None, run["built"], [])]
    rows += [(f"epoch {e['epoch']}", e["seconds"], e["main"], e["workers"])
             for e in run["epochs"]]
    if run.get("trimmed"):
        rows.append(("trimmed", None, run["trimmed"], []))
    for name, secs, m, ws in rows:
        strict = (m["rss"] - b["rss"] - run["budget_bytes"]) / n
        shared = sum(m[k] - b[k] for k in ("source_rss", "memfd_rss", "shm_rss"))
        w = " ".join(f"{x['rss'] / mib:.0f}/{x['anon_private'] / mib:.1f}" for x in ws)
        print(f"{name:>9} {'' if secs is None else f'{secs:.1f}':>5} "
              + " ".join(f"{m[k] / mib:{wd}.1f}" for k, wd in (
                  ("rss", 7), ("rss_anon", 7), ("memfd_rss", 6), ("source_rss", 6),
                  ("shm_rss", 5), ("uss", 7), ("pss", 7)))
              + f" {strict:8.1f} B {(m['rss'] - b['rss'] - shared) / n:7.1f} B  {w}")
    print("MiB, except the B columns: bytes per sample of growth since 'before'. Main USS"
          "/PSS drop once forked workers share its pages; 'trimmed': after the last epoch "
          "and malloc_trim(0).")
    if run.get("service_built"):
        print("  cache service process, private anonymous MiB: built "
              f"{run['service_built']['anon_private'] / mib:.1f}, epochs " + " ".join(
                  f"{e['service']['anon_private'] / mib:.1f}" for e in run["epochs"]))
    traced = [(e["epoch"], e["traced"], e["traced_peak"]) for e in run["epochs"]
              if "traced" in e]
    if traced:
        print("  tracemalloc (live / peak within the epoch, B/sample): " + ", ".join(
            f"{i}: {t / n:.0f}/{p / n:.0f}" for i, t, p in traced))
    for s in run["cleanup"]:
        print(f"  {s['step']:<26} memfd fds {s['memfd_fds']:+d}  workers alive "
              f"{s['workers_alive']}  new /dev/shm ours {s['new_shm'] or 'none'} (others' "
              f"{s['other_new_shm']})  extra threads "
              f"{s['extra_threads']:+d}" + (f"  memfds: {', '.join(s['memfd_names'])}"
                                            if s["memfd_fds"] > 0 else ""))


def print_report(report: dict) -> None:
    """Both runs, the per-sample figures, the cost breakdown and the targets."""
    small, large, fig = report["small"], report["large"], report["figures"]
    print_run(small)
    print_run(large)
    n_s, n_l = small["samples"], large["samples"]
    print(f"\nMain-process growth (largest epoch-end snapshot), N={n_s} and N={n_l}:")
    print(f"  {'kind':<26} {'N small MiB':>11} {'N large MiB':>11} {'B/sample at N':>13} "
          f"{'B/extra sample':>14} {'fixed MiB':>9}")
    for k in MAIN_KINDS + SERVICE_KINDS:
        p = fig["per_sample"].get(k)
        if p is None:
            continue
        print(f"  {k:<26} {fig['small'][k] / 2**20:11.2f} {fig['large'][k] / 2**20:11.2f} "
              f"{p['at_n']:13.1f} {p['slope']:14.1f} {p['fixed_bytes'] / 2**20:9.2f}")
    print(f"  worker growth (anon private or RSS excl. shared) epoch 1 -> "
          f"{len(large['epochs'])}: N={n_s} "
          f"{fig['small']['worker_growth'] / 2**20:+.2f} MiB, N={n_l} "
          f"{fig['large']['worker_growth'] / 2**20:+.2f} MiB")
    arenas = fig.get("malloc")
    if arenas:
        print("  glibc arenas at the last epoch (main thread's; all other threads' summed), "
              "MiB and B/extra sample: " + ", ".join(
                  f"{k} {v['small'] / 2**20:.1f} -> {v['large'] / 2**20:.1f} "
                  f"({v['slope']:+.1f})" for k, v in arenas.items()))
    killed = report.get("killed")
    if killed is not None:
        print(f"\nSIGKILLed child: {json.dumps(killed)}")
    print(f"\nHeap structures reachable from the sampler and the dataset at N={n_l} "
          "(B/sample at N, and per additional sample):")
    for r in structure_slopes(small, large):
        print(f"  {r['at_n']:6.1f} {r['slope']:6.1f}  {r['bytes'] / 2**20:6.2f} MiB  "
              f"{'shared ' if r['shared'] else ''}{r['path']}  {r['what']}")
    for r in large.get("tracemalloc", []):
        print(f"  tracemalloc {r['bytes'] / n_l:7.1f} B/sample  {r['site']} "
              f"({r['blocks']:+d} blocks)")
    print("\nTargets:")
    for t in report["targets"]:
        print(f"  [{'met' if t['met'] else 'NOT met':>7}] {t['target']}: {t['figure']}")
