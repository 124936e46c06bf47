"""One read-only LMDB environment per file per process, safe across fork.

An LMDB environment must never be used across ``fork``, and py-lmdb refuses to open the
same file twice in one process (it even remembers environments a forked child
inherited). Sources therefore open through this registry, keyed by real path and shared
by every source on that path. In a forked child the inherited environments are closed
first (harmless with ``lock=False``: closing only unmaps the child's copy) and reopened
on first use.
"""

from __future__ import annotations

import os
import threading
from typing import Dict

import lmdb

from .errors import CorruptRecordError, NotADatasetError, SourceError

__all__ = ["acquire_env", "release_env"]

_registry: Dict[str, list] = {}  # realpath -> [env, users]
_registry_lock = threading.Lock()


def _forget_inherited_envs() -> None:
    global _registry_lock
    # Another thread of the parent (e.g. a prefetch thread) may have held the lock at
    # the moment of fork; the child's copy would then stay locked forever.
    _registry_lock = threading.Lock()
    for env, _ in _registry.values():
        try:
            env.close()
        except lmdb.Error:
            pass
    _registry.clear()


os.register_at_fork(after_in_child=_forget_inherited_envs)


def acquire_env(path: str, subdir: bool, max_readers: int) -> "lmdb.Environment":
    with _registry_lock:
        entry = _registry.get(path)
        if entry is None:
            try:
                env = lmdb.open(path, subdir=subdir, readonly=True, lock=False,
                                readahead=False, meminit=False, max_readers=max_readers,
                                max_dbs=0)
            except lmdb.InvalidError:
                raise NotADatasetError(
                    f"{path!r} is not an LMDB environment (bad header); point LMDBSource "
                    "at a directory holding data.mdb or at an .mdb/.lmdb file") from None
            except lmdb.Error as exc:
                if "already open" in str(exc):
                    raise SourceError(
                        f"{path!r} is already open in this process through another LMDB "
                        "handle; close that handle, or read through this LMDBSource "
                        "only") from None
                raise SourceError(f"cannot open LMDB {path!r}: {exc}") from None
            _check_not_truncated(env, path, subdir)
            entry = _registry[path] = [env, 0]
        entry[1] += 1
        return entry[0]


def _check_not_truncated(env: "lmdb.Environment", path: str, subdir: bool) -> None:
    # Reading a page past the end of a memory-mapped file kills the process with
    # SIGBUS, so a file shorter than the pages its meta page claims is refused up front.
    data = os.path.join(path, "data.mdb") if subdir else path
    need = (env.info()["last_pgno"] + 1) * env.stat()["psize"]
    have = os.path.getsize(data)
    if have < need:
        env.close()
        raise CorruptRecordError(
            f"LMDB {data!r} is truncated: {have} bytes on disk, its meta page needs "
            f"{need}; restore or rewrite the dataset")


def release_env(path: str) -> None:
    with _registry_lock:
        entry = _registry.get(path)
        if entry is None:
            return
        entry[1] -= 1
        if entry[1] <= 0:
            entry[0].close()
            del _registry[path]
