"""The report of an impact-bench run: the comparison table, the targets and the plots."""

from __future__ import annotations

import math
from typing import Any, Dict, List, Optional

from .figures import TARGETS

__all__ = ["format_table", "format_targets", "format_report", "plot_report"]

# (header, format, key, scale): the columns of the comparison table.
COLUMNS = (
    ("loader", "{:14s}", "loader", None),
    ("epoch s", "{:7.2f}", "median_epoch_s", None),
    ("samples/s", "{:9.0f}", "samples_per_s", None),
    ("vs plain", "{:7.2f}x", "speedup_vs_plain", None),
    ("hit %", "{:5.1f}", "hit_ratio", 100),
    ("subst %", "{:7.1f}", "substitution_ratio", 100),
    ("requests", "{:8.0f}", "requests_per_epoch", None),
    ("MB read", "{:7.1f}", "mb_per_epoch", None),
    ("wait %", "{:6.1f}", "data_wait_share", 100),
    ("T/bound", "{:7.2f}", "ratio_to_bound", None),
    ("acc %", "{:5.1f}", "test_accuracy", 100),
)


def _cell(fmt: str, value: Any, scale: Optional[int]) -> str:
    if isinstance(value, float) and math.isnan(value):
        return f"{'n/a':>{len(fmt.format(0))}s}"
    return fmt.format(value * scale if scale else value)


def format_table(rows: List[Dict[str, Any]]) -> str:
    """The comparison table: one line per loader (figures per measured epoch)."""
    widths = [max(len(h), len(_cell(f, 0.0 if k != "loader" else "", s)))
              for h, f, k, s in COLUMNS]
    lines = [" | ".join(h.rjust(w) for (h, *_), w in zip(COLUMNS, widths))]
    lines.append("-+-".join("-" * w for w in widths))
    for r in rows:
        lines.append(" | ".join(_cell(f, r[k], s).rjust(w)
                                for (_, f, k, s), w in zip(COLUMNS, widths)))
    return "\n".join(lines)


def format_details(rows: List[Dict[str, Any]]) -> str:
    """Per-epoch times, the bound's terms and the main-process cost, per loader."""
    out = ["per-epoch seconds (trained share):"]
    for r in rows:
        cells = " ".join(f"{t:5.2f}({f:.0%})" for t, f in zip(r["epoch_seconds"],
                                                              r["trained_fraction"]))
        out.append(f"  {r['loader']:14s} {cells}")
    out.append("physical bound of the median measured epoch: compute | bandwidth | latency "
               "(h, f, k_eff) | storage time of the requests actually issued:")
    for r in rows:
        b = sorted(r["bound_terms"], key=lambda t: t["bound"])[len(r["bound_terms"]) // 2]
        out.append(f"  {r['loader']:14s} {b['compute']:6.2f} | {b['bandwidth']:6.2f} | "
                   f"{b['latency']:6.2f} s (h={b['h']:.2f}, f={b['f']:.2f}, "
                   f"k_eff={b['k_eff']:.1f}) | {b['issued_io']:6.2f} s")
    cached = [r for r in rows if not math.isnan(r["bookkeeping_us_per_sample"])]
    if cached:
        out.append("main process: sampler + prefetcher CPU per delivered sample | CPU "
                   "cores busy (main process, its background threads, workers, cache "
                   "service process):")
        for r in cached:
            out.append(f"  {r['loader']:14s} {r['bookkeeping_us_per_sample']:7.1f} us | "
                       f"{r['main_cpu_share']:.2f}, {r['background_cpu_share']:.2f}, "
                       f"{r['worker_cpu_share']:.2f}, {r['service_cpu_share']:.2f}")
    return "\n".join(out)


def format_targets(targets: Dict[str, Any]) -> str:
    """The end-to-end targets measured on the ``impact`` row (empty without it)."""
    if not targets:
        return ""
    out = ["targets of impact-loader's default:"]
    for key, text, ok in TARGETS:
        if key not in targets or math.isnan(targets[key]):
            continue
        verdict = "" if ok is None else ("met" if ok(targets[key]) else "NOT met")
        value = targets[key] * (100 if key.endswith("share") else 1)
        unit = "%" if key.endswith("share") else ""
        out.append(f"  {text:42s} {value:8.2f}{unit} {verdict}")
    return "\n".join(out)


def format_report(report: Dict[str, Any], details: bool = True) -> str:
    """The whole text report: one table per cache fraction, details and targets."""
    out = []
    for run in report["runs"]:
        out.append(f"\ncache {run['cache_fraction']:.0%} of the data "
                   f"({run['cache_bytes'] / 2**20:.1f} MiB); median of measured epochs")
        out.append(format_table(run["rows"]))
        if details:
            out.append(format_details(run["rows"]))
        targets = format_targets(run["targets"])
        if targets:
            out.append(targets)
    return "\n".join(out)


def plot_report(report: Dict[str, Any], path: str) -> str:
    """Write a PNG: epoch time and hit ratio per loader, and (when several cache
    fractions were run) hit ratio and epoch time against the cache fraction.

    Raises:
        ImportError: matplotlib is missing (``pip install impact-loader[plot]``).
    """
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError("--plot needs matplotlib: pip install 'impact-loader[plot]'") from exc
    runs = report["runs"]
    sweep = len(runs) > 1
    fig, axes = plt.subplots(1, 4 if sweep else 2, figsize=(16 if sweep else 9, 3.8))
    first = runs[0]
    names = [r["loader"] for r in first["rows"]]
    x = range(len(names))
    ax = axes[0]
    ax.bar(x, [r["median_epoch_s"] for r in first["rows"]], color="tab:blue")
    ax.set_xticks(list(x), names, rotation=30)
    ax.set_ylabel("median epoch time (s)")
    ax.set_title(f"epoch time, cache {first['cache_fraction']:.0%}")
    ax = axes[1]
    hits = [100 * r["hit_ratio"] for r in first["rows"]]
    subs = [100 * r["substitution_ratio"] for r in first["rows"]]
    ax.bar(x, hits, color="tab:green", label="true hits")
    ax.bar(x, subs, bottom=hits, color="tab:olive", label="substitutions")
    ax.set_xticks(list(x), names, rotation=30)
    ax.set_ylabel("share of planned samples (%)")
    ax.set_ylim(0, 100)
    ax.set_title("hit ratio")
    ax.legend(fontsize=8)
    if sweep:
        fractions = [100 * run["cache_fraction"] for run in runs]
        for i, name in enumerate(names):
            rows = [run["rows"][i] for run in runs]
            axes[2].plot(fractions, [100 * (r["hit_ratio"] + r["substitution_ratio"])
                                     for r in rows], marker="o", label=name)
            axes[3].plot(fractions, [r["median_epoch_s"] for r in rows], marker="o",
                         label=name)
        axes[2].set_xlabel("cache (% of the data)")
        axes[2].set_ylabel("hits + substitutions (%)")
        axes[2].set_title("hit ratio vs cache size")
        axes[3].set_xlabel("cache (% of the data)")
        axes[3].set_ylabel("median epoch time (s)")
        axes[3].set_title("epoch time vs cache size")
        axes[3].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)
    return path
