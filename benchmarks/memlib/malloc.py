"""glibc's malloc arenas of this process: which arena holds the heap's bytes.

The main arena serves the main thread; every other thread that allocates gets an arena
of its own (up to 8 per core), and glibc gives an arena's free top back to the OS only
when it exceeds the trim threshold, which rises with the largest freed ``mmap``
allocation (an N-sized numpy array). ``malloc_trim(0)`` returns free pages inside
every arena's bins but not the free top of the per-thread arenas, so memory the reader
threads once used can stay resident for the rest of the run. Linux + glibc only
(``malloc_info``); elsewhere :func:`malloc_arenas` returns ``{}``.
"""

from __future__ import annotations

import ctypes
import os
import platform
import re
import tempfile
from typing import Dict, List, Tuple

__all__ = ["malloc_arenas"]

_HEAP = re.compile(r'<heap nr="(\d+)">(.*?)</heap>', re.S)
_SYSTEM = re.compile(r'<system type="current" size="(\d+)"')
_FREE = re.compile(r'<total type="(?:fast|rest)" count="\d+" size="(\d+)"')


def _arena_sizes(xml: str) -> List[Tuple[int, int, int]]:
    """``(number, bytes from the system, free bytes)`` per arena of a malloc_info XML."""
    out = []
    for m in _HEAP.finditer(xml):
        system = _SYSTEM.search(m.group(2))
        free = sum(int(x) for x in _FREE.findall(m.group(2)))
        out.append((int(m.group(1)), int(system.group(1)) if system else 0, free))
    return out


def malloc_arenas() -> Dict[str, int]:
    """Bytes glibc's arenas took from the system, and how much of it is free.

    Keys: ``main_sys`` / ``main_free`` (the main thread's arena), ``threads_sys`` /
    ``threads_free`` (all other arenas summed), ``thread_arenas`` (their number),
    ``threads_largest`` (the largest one's bytes). Free bytes include the arena's top
    chunk; pages a trim gave back still count as free (compare with RSS). ``{}`` off
    glibc.
    """
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return {}
    libc = ctypes.CDLL(None)
    libc.fopen.restype = ctypes.c_void_p
    libc.fopen.argtypes = [ctypes.c_char_p, ctypes.c_char_p]
    libc.fclose.argtypes = [ctypes.c_void_p]
    libc.malloc_info.argtypes = [ctypes.c_int, ctypes.c_void_p]
    fd, path = tempfile.mkstemp(prefix="impact-malloc-", suffix=".xml")
    os.close(fd)
    try:
        fp = libc.fopen(path.encode(), b"w")
        if not fp:
            return {}
        libc.malloc_info(0, fp)
        libc.fclose(fp)
        with open(path) as f:
            arenas = _arena_sizes(f.read())
    finally:
        os.unlink(path)
    main = [a for a in arenas if a[0] == 0] or [(0, 0, 0)]
    others = [a for a in arenas if a[0] != 0]
    return {"main_sys": main[0][1], "main_free": main[0][2],
            "threads_sys": sum(a[1] for a in others),
            "threads_free": sum(a[2] for a in others), "thread_arenas": len(others),
            "threads_largest": max((a[1] for a in others), default=0)}
