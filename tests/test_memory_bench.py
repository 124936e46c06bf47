"""benchmarks/memory.py: the report is complete, and no shared memory outlives the loader.

RSS figures are never asserted (too noisy, and timing/size figures belong in the
benchmark report); what is asserted is correctness: after the loader and the dataset
are gone no memfd descriptor, no ``/dev/shm`` entry, no worker and no thread is left,
and a SIGKILLed owner leaves nothing behind.
"""

from __future__ import annotations

import importlib.util
import json
import math
import os
import platform
import sys

import pytest

BENCH = os.path.join(os.path.dirname(__file__), os.pardir, "benchmarks", "memory.py")
SNAPSHOT_KEYS = ("rss", "hwm", "rss_anon", "rss_file", "rss_shmem", "pss", "uss",
                 "memfd_rss", "source_rss", "shm_rss", "anon_rss", "file_rss")
STEPS = ("loader alive", "del loader; gc.collect()", "dataset.close()",
         "del dataset; gc.collect()")

pytestmark = pytest.mark.slow  # three child interpreters with DataLoader workers


def _load():
    spec = importlib.util.spec_from_file_location("memory_bench", BENCH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def quick(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("memory-bench")
    out = tmp / "report.json"
    report = _load().main(["--quick", "--data-dir", str(tmp / "data"), "--json", str(out)])
    return report, json.loads(out.read_text())


def test_report_is_complete(quick):
    report, saved = quick
    assert saved["targets"] == report["targets"]
    for name, n in (("small", 1000), ("large", 4000)):
        run = report[name]
        assert run["samples"] == n
        assert run["budget_bytes"] == run["cache_bytes"] + run["staging_bytes"] > 0
        assert len(run["epochs"]) == 3
        for e in run["epochs"]:
            assert e["samples"] > 0
            assert len(e["workers"]) == 2
            for snap in [e["main"], *e["workers"]]:
                assert all(isinstance(snap[k], int) and snap[k] >= 0 for k in SNAPSHOT_KEYS)
                assert snap["rss"] > 0
        assert [s["step"] for s in run["cleanup"]] == list(STEPS)
        assert run["structures"], "no heap structure found behind the sampler"
    for kind, p in report["figures"]["per_sample"].items():
        assert all(math.isfinite(v) for v in p.values()), kind
    arenas = report["figures"]["malloc"]
    if platform.libc_ver()[0] == "glibc":  # the arenas behind the main process's heap
        assert set(arenas) == {"main_sys", "main_free", "threads_sys", "threads_free"}
        assert all(v["large"] >= 0 and math.isfinite(v["slope"]) for v in arenas.values())
    service = "with_service" in report["figures"]["per_sample"]  # the Linux default
    assert service == (report["large"]["service_built"] is not None)
    assert len(report["targets"]) == 7 + service
    assert all(isinstance(t["met"], bool) and t["figure"] for t in report["targets"])


def test_nothing_outlives_the_loader_and_the_dataset(quick):
    report, _ = quick
    for name in ("small", "large"):
        steps = {s["step"]: s for s in report[name]["cleanup"]}
        alive = steps["loader alive"]
        assert alive["memfd_fds"] > 0 and alive["workers_alive"] == 2  # the check can fail
        gone = steps["del loader; gc.collect()"]
        assert gone["workers_alive"] == 0 and gone["new_shm"] == []
        closed = steps["dataset.close()"]
        # The cache store (its data region is exactly the budget) is unmapped and closed.
        budget = report[name]["budget_bytes"]
        assert not [m for m in closed["memfd_names"] if m.endswith(f" {budget}")]
        assert closed["new_shm"] == [] and closed["extra_threads"] <= 0
        last = steps["del dataset; gc.collect()"]
        assert last["memfd_fds"] == 0, last["memfd_names"]
        assert last["new_shm"] == [] and last["workers_alive"] == 0
        assert last["extra_threads"] <= 0


def test_dataset_close_releases_every_memfd(quick):
    report, _ = quick
    for name in ("small", "large"):
        closed = {s["step"]: s for s in report[name]["cleanup"]}["dataset.close()"]
        assert closed["memfd_fds"] == 0, closed["memfd_names"]


def test_sigkilled_owner_leaves_nothing(quick):
    killed = quick[0]["killed"]
    assert killed["child_memfd_fds"] > 0 and len(killed["worker_pids"]) == 2
    assert killed["workers_exited"], "DataLoader workers outlived their killed parent"
    assert killed["service_pid"] and killed["service_exited"], \
        "the cache service outlived its killed parent"
    assert killed["new_shm"] == [] and killed["parent_memfd_fds"] == 0
    assert killed["parent_children"] == [] and killed["ok"]


def test_usage_errors(capsys):
    bench = _load()
    for argv in (["--samples", "10"], ["--cache-fraction", "2"], ["--malloc-arena-max", "-1"]):
        with pytest.raises(SystemExit) as exc:
            bench.parse_args(argv)
        assert exc.value.code == 2
    assert "--cache-fraction=2.0 must be in (0, 1]" in capsys.readouterr().err


def test_malloc_info_parsed_per_arena():
    sys.path.insert(0, os.path.dirname(BENCH))
    from memlib.malloc import _arena_sizes
    xml = ('<malloc version="1"><heap nr="0"><sizes></sizes>'
           '<total type="fast" count="2" size="64"/><total type="rest" count="3" size="900"/>'
           '<system type="current" size="4096"/><system type="max" size="8192"/></heap>'
           '<heap nr="1"><total type="fast" count="0" size="0"/>'
           '<total type="rest" count="1" size="100"/><system type="current" size="1000"/>'
           '</heap><total type="fast" count="2" size="64"/></malloc>')
    assert _arena_sizes(xml) == [(0, 4096, 964), (1, 1000, 100)]
