"""Readers of ``/proc`` and ``/dev/shm``: memory per kind of mapping, descriptors, pids.

Linux only (the memory benchmark's figures come from ``/proc/<pid>/smaps``).
"""

from __future__ import annotations

import os
import re
import time
from typing import Any, Dict, List, Optional

__all__ = ["proc_memory", "shm_held", "memfd_fds", "shm_entries", "alive", "reset_peak",
           "split_shm", "wait_until"]

_MAP_HEADER = re.compile(r"^[0-9a-f]+-[0-9a-f]+ ")


def _kb_fields(lines) -> Dict[str, int]:
    out = {}
    for line in lines:
        parts = line.split()
        if len(parts) >= 3 and parts[-1] == "kB":
            out[parts[0].rstrip(":")] = int(parts[1]) * 1024
    return out


def proc_memory(pid: Any = "self", source_dir: Optional[str] = None) -> Dict[str, int]:
    """Bytes of one process: RSS, PSS, USS, status split, RSS and private bytes per kind.

    Kinds of mapping: ``memfd`` (impact-loader's shared regions), ``source`` (files
    under ``source_dir``), ``shm`` (``/dev/shm`` files: torch's shared batch tensors,
    semaphores), ``anon`` (heap, stacks, anonymous maps), ``file`` (everything else).
    ``<kind>_private`` counts pages mapped by this process only: for ``anon`` these
    are the pages a forked worker copied (or allocated itself), while an inherited page
    still shared with the parent is not private.
    """
    with open(f"/proc/{pid}/status") as f:
        status = _kb_fields(f)
    with open(f"/proc/{pid}/smaps_rollup") as f:
        roll = _kb_fields(f)
    kinds = ("memfd", "source", "shm", "anon", "file")
    rss, private = dict.fromkeys(kinds, 0), dict.fromkeys(kinds, 0)
    kind = "anon"
    src = os.path.realpath(source_dir) if source_dir else None
    with open(f"/proc/{pid}/smaps") as f:
        for line in f:
            if _MAP_HEADER.match(line):
                parts = line.split(None, 5)
                path = parts[5].strip() if len(parts) > 5 else ""
                if path.startswith("/memfd:impact-loader"):
                    kind = "memfd"
                elif src and path.startswith(src):
                    kind = "source"
                elif path.startswith("/dev/shm"):
                    kind = "shm"
                elif not path or path.startswith("["):
                    kind = "anon"
                else:
                    kind = "file"
            elif line.startswith("Rss:"):
                rss[kind] += int(line.split()[1]) * 1024
            elif line.startswith(("Private_Clean:", "Private_Dirty:")):
                private[kind] += int(line.split()[1]) * 1024
    return {"rss": status["VmRSS"], "hwm": status["VmHWM"], "rss_anon": status["RssAnon"],
            "rss_file": status["RssFile"], "rss_shmem": status["RssShmem"],
            "pss": roll["Pss"], "uss": roll["Private_Clean"] + roll["Private_Dirty"],
            **{f"{k}_rss": v for k, v in rss.items()},
            **{f"{k}_private": v for k, v in private.items()}}


def shm_held(pids: List[int]) -> List[str]:
    """``/dev/shm`` names that ``pids`` map or hold open (what could be theirs)."""
    names = set()
    for pid in pids:
        try:
            with open(f"/proc/{pid}/maps") as f:
                for line in f:
                    at = line.find("/dev/shm/")
                    if at >= 0:
                        names.add(line[at + 9:].split()[0])
            for fd in os.listdir(f"/proc/{pid}/fd"):
                try:
                    target = os.readlink(f"/proc/{pid}/fd/{fd}")
                except OSError:
                    continue
                if target.startswith("/dev/shm/"):
                    names.add(target[9:].split()[0])
        except OSError:
            continue  # the process is gone
    return sorted(names)


def memfd_fds(pid: Any = "self") -> List[str]:
    """The memfd descriptors ``pid`` holds, as ``"<name> <size in bytes>"``."""
    out = []
    base = f"/proc/{pid}/fd"
    for fd in os.listdir(base):
        try:
            target = os.readlink(os.path.join(base, fd))
            if target.startswith("/memfd:"):
                size = os.stat(os.path.join(base, fd)).st_size
                out.append(f"{target.split()[0][7:]} {size}")
        except OSError:
            continue  # closed meanwhile (the listdir descriptor itself)
    return sorted(out)


def shm_entries() -> List[str]:
    """Names in ``/dev/shm`` (POSIX shared memory, semaphores, torch tensors)."""
    try:
        return sorted(os.listdir("/dev/shm"))
    except FileNotFoundError:
        return []


def alive(pid: int) -> bool:
    """Whether ``pid`` exists and is not a zombie."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return False


def reset_peak() -> None:
    """Reset VmHWM of this process (Linux >= 4.0), so the peak covers the run only."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        pass


def split_shm(new: set, held: set, pids: List[int]) -> tuple:
    """``(ours, others)``: new ``/dev/shm`` names ours (held, or named after a pid)."""
    tags = tuple(f"_{pid}_" for pid in pids)
    ours = sorted(x for x in new if x in held or any(t in x for t in tags))
    return ours, sorted(new - set(ours))


def wait_until(done, timeout: float) -> bool:
    """Poll ``done()`` every 50 ms until it is true (True) or ``timeout`` seconds pass."""
    deadline = time.monotonic() + timeout
    while not done():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True
