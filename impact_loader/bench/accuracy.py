"""Accuracy benchmark: the same training under ``uniform`` and ``impact`` selection.

Does training on what impact-loader selects cost accuracy? Two small tasks (see
:mod:`impact_loader.bench.accuracy_data`): scikit-learn's digits and the synthetic noisy
task. Each training set is written once with :func:`impact_loader.write_lmdb` into a
temporary directory and read through ``ImpactDataset`` + ``ImpactLoader``. Every
(dataset, policy, seed) run uses the same MLP (64-128-10), SGD optimiser, epochs and
batch size; the seed fixes the initial weights and the sampler's plans, so the policies
start from the same model and differ only in ``policy=``. Everything else (sampling
configuration, cache policy) is the library's default and is recorded in the result.
"""

from __future__ import annotations

import hashlib
import os
import statistics
import tempfile
import time
from typing import Any, Dict, List, Optional, Sequence

import torch
import torch.nn.functional as F

from . import accuracy_data
from .accuracy_data import DATASETS, DEFAULTS, QUICK
from .instruments import environment
from .task import HIDDEN, make_model, to_xy

__all__ = ["DATASETS", "DEFAULTS", "QUICK", "format_table", "make_model",
           "run_accuracy"]


def _fingerprint(model: torch.nn.Module) -> str:
    digest = hashlib.sha256()
    for p in model.parameters():
        digest.update(p.detach().numpy().tobytes())
    return digest.hexdigest()[:16]


# ---------------------------------------------------------------- one run
def _accuracy(model: torch.nn.Module, data: Dict[str, Any]) -> float:
    with torch.no_grad():
        return float((model(data["test_x"]).argmax(1) == data["test_y"]).float().mean())


def _train(data: Dict[str, Any], policy: str, seed: int, opts: Dict[str, Any],
           bar: Any) -> Dict[str, Any]:
    import impact_loader as il

    n = data["train_samples"]
    cache_bytes = int(opts["cache_fraction"] * n * data["record_bytes"])
    source = il.LMDBSource(data["path"])
    dataset = il.ImpactDataset(source, transform=to_xy, cache_bytes=cache_bytes)
    try:
        loader = il.ImpactLoader(dataset, opts["batch_size"], policy=policy, seed=seed,
                                 num_workers=opts["workers"])
        model = make_model(seed, data["features"], data["classes"])
        initial = _fingerprint(model)
        opt = torch.optim.SGD(model.parameters(), lr=opts["lr"], momentum=opts["momentum"])
        epochs: List[Dict[str, Any]] = []
        for epoch in range(opts["epochs"]):
            loader.set_epoch(epoch)
            before = loader.stats()
            delivered, loss_sum = 0, 0.0
            start = time.perf_counter()
            for (x, y), idx in loader:
                losses = F.cross_entropy(model(x), y, reduction="none")
                opt.zero_grad(set_to_none=True)
                (losses * loader.sampler.weights(idx)).mean().backward()
                opt.step()
                loader.update(idx, losses.detach())
                delivered += len(idx)
                loss_sum += float(losses.detach().sum())
            seconds = time.perf_counter() - start
            after = loader.stats()
            delta = {k: after.get(k, 0) - before.get(k, 0)
                     for k in ("warmup_epochs", "refreshes", "hits", "substitutions")}
            kind = ("warmup" if delta["warmup_epochs"] else "refresh" if delta["refreshes"]
                    else "full" if policy == "uniform" else "select")
            epochs.append({"epoch": epoch, "kind": kind, "seconds": seconds,
                           "delivered": delivered, "trained_fraction": delivered / n,
                           "train_loss": loss_sum / max(1, delivered),
                           "test_accuracy": _accuracy(model, data),
                           "cache_hits": delta["hits"],
                           "substitutions": delta["substitutions"]})
            bar.update(1)
        return {"policy": policy, "seed": seed, "initial_model": initial,
                "final_accuracy": epochs[-1]["test_accuracy"],
                "seconds_per_epoch": statistics.fmean(e["seconds"] for e in epochs),
                "trained_fraction": statistics.fmean(e["trained_fraction"] for e in epochs),
                "cache_bytes": cache_bytes, "cache_policy": dataset.cache_policy,
                "sampling_config": loader.sampler.config.to_dict(), "epochs": epochs}
    finally:
        dataset.close()
        source.close()


# ---------------------------------------------------------------- the benchmark
def _check(datasets, policies, seeds, opts) -> None:
    from impact_loader.sampling.registry import POLICIES

    for name in datasets:
        if name not in DATASETS:
            raise ValueError(f"dataset {name!r} is unknown; choose from {', '.join(DATASETS)}")
    for name in policies:
        if name not in POLICIES:
            raise ValueError(f"policy {name!r} is unknown; choose from {', '.join(POLICIES)}")
    if not datasets or not policies or not seeds:
        raise ValueError(f"datasets={datasets!r}, policies={policies!r} and seeds={seeds!r} "
                         "must each name at least one")
    for s in seeds:
        if isinstance(s, bool) or not isinstance(s, int) or s < 0:
            raise ValueError(f"seed {s!r} must be an int >= 0, e.g. 0")
    for key, low in (("epochs", 1), ("batch_size", 1), ("workers", 0), ("torch_threads", 1),
                     ("synthetic_samples", 64), ("synthetic_test_samples", 1)):
        if isinstance(opts[key], bool) or not isinstance(opts[key], int) or opts[key] < low:
            raise ValueError(f"{key}={opts[key]!r} must be an int >= {low}")
    if not 0.0 <= opts["cache_fraction"] <= 1.0:
        raise ValueError(f"cache_fraction={opts['cache_fraction']!r} must be in [0, 1] "
                         "(a share of the training bytes); pass 0 to disable the cache")
    if not opts["lr"] > 0:
        raise ValueError(f"lr={opts['lr']!r} must be > 0, e.g. 0.05")


def _summarize(runs: List[Dict[str, Any]], datasets, policies) -> List[Dict[str, Any]]:
    rows = []
    for d in datasets:
        for p in policies:
            mine = [r for r in runs if r["dataset"] == d and r["policy"] == p]
            acc = [r["final_accuracy"] for r in mine]
            rows.append({"dataset": d, "policy": p, "seeds": [r["seed"] for r in mine],
                         "accuracy_mean": statistics.fmean(acc),
                         "accuracy_std": statistics.stdev(acc) if len(acc) > 1 else 0.0,
                         "accuracy_min": min(acc), "accuracy_max": max(acc),
                         "seconds_per_epoch": statistics.fmean(
                             r["seconds_per_epoch"] for r in mine),
                         "trained_fraction": statistics.fmean(
                             r["trained_fraction"] for r in mine)})
    for row in rows:
        base = next((r for r in rows if r["dataset"] == row["dataset"]
                     and r["policy"] == "uniform"), None)
        row["minus_uniform_points"] = (None if base is None or row is base else
                                       100 * (row["accuracy_mean"] - base["accuracy_mean"]))
    return rows


def run_accuracy(*, datasets: Sequence[str] = DATASETS,
                 policies: Sequence[str] = ("uniform", "impact"),
                 seeds: Sequence[int] = (0, 1, 2), epochs: Optional[int] = None,
                 batch_size: int = 128, workers: int = 0, lr: float = 0.05,
                 momentum: float = 0.9, cache_fraction: float = 0.2,
                 synthetic_samples: Optional[int] = None,
                 synthetic_test_samples: Optional[int] = None, torch_threads: int = 1,
                 quick: bool = False, progress: bool = True) -> Dict[str, Any]:
    """Train every (dataset, policy, seed) and report final test accuracy and epoch time.

    Args:
        datasets: names from :data:`DATASETS`.
        policies: selection policy names (``ImportanceSampler``'s ``policy=``).
        seeds: one run per seed (ints >= 0): initial weights and sampler plans.
        epochs: epochs per run, the same for every policy (None: 20, quick 7).
        batch_size: samples per batch.
        workers: DataLoader worker processes (0: load in the training process).
        lr: SGD learning rate. momentum: SGD momentum.
        cache_fraction: ``cache_bytes`` of the ImpactDataset as a share of the training
            set's bytes, in [0, 1] (0 disables the cache; the cache policy is the
            library's default).
        synthetic_samples: training samples of ``synthetic`` (None: 10000, quick 1000).
        synthetic_test_samples: its held-out test samples (None: 2000, quick 500).
        torch_threads: intra-op threads of torch during the runs (restored after).
        quick: smaller defaults for a smoke run of a few seconds.
        progress: show a progress bar (one step per trained epoch) on stderr.

    Returns:
        A JSON-serialisable dict: ``options`` (everything used, including the library
        defaults), ``datasets`` (sizes, record bytes), ``runs`` (per run: final accuracy,
        initial-model fingerprint, per-epoch seconds, trained fraction, loss and test
        accuracy), ``summary`` (per dataset and policy: accuracy mean, sample std, min,
        max over seeds as fractions; mean seconds per epoch; trained fraction; mean
        accuracy minus uniform's in points) and ``environment`` (versions, machine,
        wall and CPU seconds of the whole benchmark, load average before and after).

    Raises:
        ValueError: an unknown dataset or policy, or an option out of range.
        ImportError: ``digits`` without scikit-learn installed.
    """
    size = QUICK if quick else DEFAULTS
    opts = {"epochs": size["epochs"] if epochs is None else epochs,
            "batch_size": batch_size, "workers": workers, "lr": float(lr),
            "momentum": float(momentum), "cache_fraction": float(cache_fraction),
            "synthetic_samples": (size["synthetic_samples"] if synthetic_samples is None
                                  else synthetic_samples),
            "synthetic_test_samples": (size["synthetic_test_samples"]
                                       if synthetic_test_samples is None
                                       else synthetic_test_samples),
            "torch_threads": torch_threads, "quick": bool(quick)}
    datasets, policies, seeds = list(datasets), list(policies), list(seeds)
    _check(datasets, policies, seeds, opts)
    from tqdm.auto import tqdm

    wall, cpu, load = time.perf_counter(), time.process_time(), os.getloadavg()[0]
    threads = torch.get_num_threads()
    torch.set_num_threads(torch_threads)
    info: Dict[str, Any] = {}
    runs: List[Dict[str, Any]] = []
    bar = tqdm(total=len(datasets) * len(policies) * len(seeds) * opts["epochs"],
               desc="accuracy", unit="epoch", disable=not progress, dynamic_ncols=True)
    try:
        with tempfile.TemporaryDirectory(prefix="impact-bench-accuracy-") as tmp:
            for name in datasets:
                bar.set_postfix_str(f"{name}: writing")
                data = accuracy_data.prepare(
                    name, tmp, synthetic_samples=opts["synthetic_samples"],
                    synthetic_test_samples=opts["synthetic_test_samples"])
                info[name] = {k: v for k, v in data.items()
                              if k not in ("path", "test_x", "test_y")}
                for seed in seeds:  # policies side by side per seed: equal machine load
                    for policy in policies:
                        bar.set_postfix_str(f"{name} {policy} seed {seed}")
                        run = _train(data, policy, seed, opts, bar)
                        runs.append({"dataset": name, **run})
    finally:
        bar.close()
        torch.set_num_threads(threads)
    opts.update(model=f"MLP {HIDDEN} hidden ReLU", optimizer="SGD",
                cache_policy=runs[0]["cache_policy"],
                sampling_config=runs[0]["sampling_config"],
                digits_split={"test_fraction": accuracy_data.DIGITS_TEST_FRACTION,
                              "stratified": True,
                              "random_state": accuracy_data.SPLIT_SEED},
                synthetic_seed=accuracy_data.SYNTHETIC_SEED)
    return {"benchmark": "accuracy", "datasets_run": datasets, "policies": policies,
            "seeds": seeds, "options": opts, "datasets": info, "runs": runs,
            "summary": _summarize(runs, datasets, policies),
            "environment": {**environment(), "wall_seconds": time.perf_counter() - wall,
                            "cpu_seconds": time.process_time() - cpu,
                            "load_average": [load, os.getloadavg()[0]]}}


def format_table(result: Dict[str, Any]) -> str:
    """A readable table of ``run_accuracy``'s summary, one row per (dataset, policy)."""
    o = result["options"]
    lines = [f"accuracy: {o['epochs']} epochs, batch {o['batch_size']}, seeds "
             f"{','.join(map(str, result['seeds']))}, SGD lr {o['lr']:g} momentum "
             f"{o['momentum']:g}; cache {o['cache_fraction']:.0%} of the training bytes "
             f"({o['cache_policy']}); sampling options: library defaults",
             f"{'dataset':10s} {'policy':10s} {'mean acc%':>9s} {'std':>5s} "
             f"{'min-max %':>11s} {'s/epoch':>8s} {'trained':>7s} {'vs uniform':>11s}"]
    for r in result["summary"]:
        diff = r["minus_uniform_points"]
        lines.append(f"{r['dataset']:10s} {r['policy']:10s} {100 * r['accuracy_mean']:9.2f} "
                     f"{100 * r['accuracy_std']:5.2f} "
                     f"{100 * r['accuracy_min']:5.1f}-{100 * r['accuracy_max']:<5.1f} "
                     f"{r['seconds_per_epoch']:8.3f} {r['trained_fraction']:7.2f} "
                     + (f"{diff:+7.2f} pts" if diff is not None else f"{'-':>11s}"))
    lines.append("std: sample standard deviation over seeds; trained: mean share of the "
                 "training set delivered per epoch; vs uniform: mean accuracy difference "
                 "in points")
    for r in result["summary"]:
        if r["policy"] == "impact" and r["minus_uniform_points"] is not None:
            ok = r["minus_uniform_points"] >= -1.0
            lines.append(f"target on {r['dataset']}: impact within 1 point of uniform: "
                         f"{'met' if ok else 'NOT met'} ({r['minus_uniform_points']:+.2f})")
    env = result.get("environment", {})
    if "wall_seconds" in env:
        lines.append(f"{env['wall_seconds']:.0f} s in all, {env['cpu_seconds']:.0f} s of CPU "
                     f"in this process; load average {env['load_average'][0]:.2f} before, "
                     f"{env['load_average'][1]:.2f} after, on {env['cpu_count']} cores")
    return "\n".join(lines)
