"""Page-cache control, so benchmarks can measure real cold reads.

:func:`evict_page_cache` asks the kernel (``posix_fadvise(POSIX_FADV_DONTNEED)``) to
drop a source's files from the OS page cache; :func:`resident_bytes` reports how much
of a file is cached (``mincore``), so a benchmark can check the eviction took effect.
Pages that some process currently has memory-mapped and in use may stay resident; the
kernel decides, so measure rather than assume.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import mmap
import os
from typing import Any, Iterable, List, Union

__all__ = ["evict_page_cache", "resident_bytes", "source_files"]


def source_files(source_or_paths: Union[Any, str, Iterable[str]]) -> List[str]:
    """Data files behind a source (its ``files()``), a path, or a list of paths."""
    if isinstance(source_or_paths, (str, os.PathLike)):
        paths = [os.fspath(source_or_paths)]
    elif hasattr(source_or_paths, "files"):
        paths = list(source_or_paths.files())
    else:
        paths = [os.fspath(p) for p in source_or_paths]
    out = []
    for p in paths:
        if os.path.isdir(p):
            out.extend(os.path.join(p, f) for f in sorted(os.listdir(p))
                       if os.path.isfile(os.path.join(p, f)))
        else:
            out.append(p)
    return out


def evict_page_cache(source_or_paths: Union[Any, str, Iterable[str]]) -> int:
    """Drop the given files from the OS page cache; return the bytes advised.

    The kernel keeps pages that a process has memory-mapped, so when given a source
    this first calls its ``close()`` (sources reopen lazily on the next read). Pages
    mapped by other processes, e.g. persistent DataLoader workers, may stay cached.

    Args:
        source_or_paths: a source with ``files()``, a path (file or directory) or paths.

    Raises:
        FileNotFoundError: a path does not exist.
        OSError: the platform has no ``posix_fadvise``.
    """
    if not hasattr(os, "posix_fadvise"):
        raise OSError("posix_fadvise is not available on this platform; cold-read "
                      "benchmarks need Linux or another POSIX system")
    close = getattr(source_or_paths, "close", None)
    if callable(close) and hasattr(source_or_paths, "files"):
        close()
    total = 0
    for path in source_files(source_or_paths):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fdatasync(fd)  # dirty pages cannot be dropped until written back
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
            total += os.fstat(fd).st_size
        finally:
            os.close(fd)
    return total


_libc = None


def _c() -> Any:
    global _libc
    if _libc is None:
        libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
        libc.mmap.restype = ctypes.c_void_p
        libc.mmap.argtypes = (ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int,
                              ctypes.c_int, ctypes.c_int, ctypes.c_long)
        libc.munmap.argtypes = (ctypes.c_void_p, ctypes.c_size_t)
        libc.mincore.argtypes = (ctypes.c_void_p, ctypes.c_size_t,
                                 ctypes.POINTER(ctypes.c_ubyte))
        _libc = libc
    return _libc


def resident_bytes(path: str) -> int:
    """Bytes of ``path`` currently in the OS page cache (Linux ``mincore``).

    Raises:
        OSError: the file cannot be opened or mapped.
    """
    size = os.path.getsize(path)
    if size == 0:
        return 0
    libc = _c()
    page = mmap.PAGESIZE
    vec = (ctypes.c_ubyte * ((size + page - 1) // page))()
    fd = os.open(path, os.O_RDONLY)
    try:
        # Map without touching any page (touching would read it into the cache).
        addr = libc.mmap(None, size, mmap.PROT_READ, mmap.MAP_SHARED, fd, 0)
        if addr in (None, ctypes.c_void_p(-1).value):
            err = ctypes.get_errno()
            raise OSError(err, f"mmap of {path!r} failed: {os.strerror(err)}")
        try:
            if libc.mincore(addr, size, vec) != 0:
                err = ctypes.get_errno()
                raise OSError(err, f"mincore on {path!r} failed: {os.strerror(err)}")
        finally:
            libc.munmap(addr, size)
    finally:
        os.close(fd)
    return sum(v & 1 for v in vec) * page
