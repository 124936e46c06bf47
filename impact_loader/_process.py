"""Per-process helpers: whether the process that started this one is gone; run once per
process."""

from __future__ import annotations

import functools
import multiprocessing
import os
from typing import Callable

__all__ = ["orphaned", "once_per_process", "process_gone"]


def orphaned() -> bool:
    """True once the process that started this one has died.

    The starter is the pid ``multiprocessing`` recorded when it created this process,
    not ``os.getppid()`` read on first use: a DataLoader worker that first looks after
    the training process died has already been re-parented, and would then never see
    it go. Outside a ``multiprocessing`` child the current parent is all there is, and
    this is always False.
    """
    creator = multiprocessing.parent_process()
    return creator is not None and os.getppid() != creator.pid


def process_gone(pid: int) -> bool:
    """Whether process ``pid`` has exited (a zombie counts as exited). Linux reads
    ``/proc``; elsewhere only a process that no longer exists at all counts."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            state = f.read().rsplit(b")", 1)[-1].split()[0]
        return state in (b"Z", b"X")
    except FileNotFoundError:
        return True
    except OSError:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        except PermissionError:
            return False
        return False


def once_per_process(fn: Callable[[], None]) -> Callable[[], None]:
    """Wrap ``fn`` so that it runs on its first call in each process: once here, and
    once more in every process forked after that (the fork inherits the flag, and the
    pid tells it apart)."""
    ran_in = -1

    @functools.wraps(fn)
    def call() -> None:
        nonlocal ran_in
        pid = os.getpid()
        if ran_in != pid:
            ran_in = pid
            fn()
    return call
