"""The killed-owner check: a child training with workers is SIGKILLed mid-epoch."""

from __future__ import annotations

import json
import os
import select
import signal
import subprocess
import time
from typing import Any, Dict

from impact_loader.bench.task import StandInTask

from .procfs import alive, memfd_fds, shm_entries, shm_held, split_shm, wait_until
from .run import build, child_command, worker_pids

__all__ = ["kill_child", "child_main"]


def kill_child(args, path: str, n: int, record: float) -> dict:
    """Start a child that trains with workers, SIGKILL it, and look for leftovers.

    The child's memfds have no name: the kernel frees them once the child and its
    workers are gone, so the check is that the workers exit, that no ``/dev/shm`` name
    the child or its workers held survives (named semaphores of spawn-started
    workers are unlinked by the child's resource tracker), and that this process
    gained no descriptor or child process.
    """
    import multiprocessing

    shm0, fds0 = shm_entries(), memfd_fds()
    child = subprocess.Popen(child_command(args, "--child", path, n, record),
                             stdout=subprocess.PIPE, text=True)
    out: Dict[str, Any] = {"ok": False}
    info = {"workers": [], "service": None, "memfd_fds": 0, "shm": []}
    try:
        ready, _, _ = select.select([child.stdout], [], [], 180.0)
        line = child.stdout.readline() if ready else ""
        if line:
            info = json.loads(line)
        else:
            out["error"] = f"child exited or timed out before training (rc={child.poll()})"
        held = set(info["shm"]) | set(shm_held([child.pid, *info["workers"]]))
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait()
        child.stdout.close()
    pids = [child.pid, *info["workers"]]
    out.update(child_pid=child.pid, worker_pids=info["workers"],
               child_memfd_fds=info["memfd_fds"], shm_held_while_running=sorted(held))
    # Workers notice the dead parent within torch's status interval (5 s).
    out["workers_exited"] = wait_until(lambda: not any(map(alive, info["workers"])), 30.0)
    # The cache service polls for its parent every 0.5 s.
    service = info.get("service")
    out["service_pid"] = service
    out["service_exited"] = service is None or wait_until(lambda: not alive(service), 30.0)
    wait_until(lambda: not split_shm(set(shm_entries()) - set(shm0), held, pids)[0], 10.0)
    out["new_shm"], others = split_shm(set(shm_entries()) - set(shm0), held, pids)
    out["other_new_shm"] = len(others)
    out["parent_memfd_fds"] = len(memfd_fds()) - len(fds0)
    out["parent_children"] = [p.pid for p in multiprocessing.active_children()]
    out["ok"] = bool(line and out["workers_exited"] and out["service_exited"]
                     and not out["new_shm"]
                     and out["parent_memfd_fds"] == 0 and info["memfd_fds"] > 0
                     and not out["parent_children"])
    return out


def child_main(args) -> None:
    """The process that gets killed: a loader with workers, mid-epoch."""
    cache_bytes = int(args.cache_fraction * args.samples * args.record)
    dataset, loader = build(args, args.data, cache_bytes)
    task = StandInTask(args.samples, seed=0, compute_ms=0.0)
    it = iter(loader)
    for _ in range(3):
        (x, y), idx = next(it)
        loader.update(idx, task.step(None, None, 0, idx))
    pids = worker_pids(loader)
    service = getattr(dataset, "service", None)
    print(json.dumps({"workers": pids, "memfd_fds": len(memfd_fds()),
                      "service": service.process.pid if service is not None else None,
                      "shm": shm_held([os.getpid(), *pids])}), flush=True)
    time.sleep(600)
