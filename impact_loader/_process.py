"""Whether the process that started this one is gone."""

from __future__ import annotations

import multiprocessing
import os

__all__ = ["orphaned"]


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
