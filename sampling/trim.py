"""Give the C heap's free pages back to the OS after an epoch is planned (glibc only).

Planning an epoch allocates N-sized numpy temporaries and frees them at once. glibc
serves allocations this size from the heap once a freed one has raised its dynamic
mmap threshold, and keeps the freed pages resident when anything live sits above them:
the main process would carry the largest planning peak for the rest of the run.
``malloc_trim(0)`` returns those pages (``madvise``), which costs a few milliseconds
once per epoch. Elsewhere (musl, macOS, Windows) it is a no-op.
"""

from __future__ import annotations

import ctypes
import platform
from typing import Callable, Optional

__all__ = ["release_free_heap"]

_trim: Optional[Callable[[int], int]] = None
_looked_up = False


def _lookup() -> Optional[Callable[[int], int]]:
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return None
    try:
        return ctypes.CDLL(None).malloc_trim
    except (OSError, AttributeError):
        return None


def release_free_heap() -> bool:
    """``malloc_trim(0)`` where glibc provides it; returns whether it was called."""
    global _trim, _looked_up
    if not _looked_up:
        _trim, _looked_up = _lookup(), True
    if _trim is None:
        return False
    _trim(0)
    return True
