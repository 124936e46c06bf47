"""SharedRegion: anonymous shared memory that any DataLoader worker can map.

Two ``memfd`` files (``os.memfd_create``), each mapped with ``mmap``: a *data* mapping
and a *metadata* mapping. A memfd has no name in ``/dev/shm``; the kernel frees it when
the last process holding its descriptor or a mapping exits, so a killed owner leaks
nothing, and there is no name to clean up after a crash.

Sharing:
    Under ``fork`` a child inherits the mappings. Under ``spawn``/``forkserver`` the
    region is pickled with the dataset; ``__reduce__`` wraps both descriptors in
    ``multiprocessing.reduction.DupFd``, which hands them to the child with the
    process-start machinery (or, when pickled outside a process start, through the
    ``resource_sharer`` thread of the owner). The child maps the same pages: nothing
    is copied, and it closes the received descriptors at once (the mappings keep the
    memory alive).
"""

from __future__ import annotations

import mmap
import os
from multiprocessing import reduction

__all__ = ["SharedRegion"]


class SharedRegion:
    """A data mapping and a metadata mapping backed by anonymous memfds.

    Args:
        data_bytes: exact size of the data mapping in bytes (>= 0).
        meta_bytes: size of the metadata mapping in bytes (>= 1).
    """

    def __init__(self, data_bytes: int, meta_bytes: int) -> None:
        self.data_bytes = data_bytes
        self.meta_bytes = meta_bytes
        fds = (os.memfd_create("impact-loader-data"), os.memfd_create("impact-loader-meta"))
        try:
            os.ftruncate(fds[0], max(data_bytes, 1))  # mmap cannot map 0 bytes
            os.ftruncate(fds[1], meta_bytes)
            self._map(*fds)
        except BaseException:
            for fd in fds:
                os.close(fd)
            raise
        self.fds = fds  # kept by the owner only, to pass the region on

    def _map(self, data_fd: int, meta_fd: int) -> None:
        self.data = mmap.mmap(data_fd, max(self.data_bytes, 1))
        self.meta = mmap.mmap(meta_fd, self.meta_bytes)

    @property
    def closed(self) -> bool:
        """Whether :meth:`close` was called."""
        return "data" not in self.__dict__

    def close(self) -> None:
        """Unmap and close the descriptors (a mapping with views still held elsewhere
        is unmapped when the last view goes)."""
        for name in ("data", "meta"):
            mm = self.__dict__.pop(name, None)
            if mm is not None:
                try:
                    mm.close()
                except BufferError:  # a view is still held: unmapped when it goes
                    pass
        for fd in self.__dict__.pop("fds", ()):
            os.close(fd)

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:  # noqa: BLE001 - views still exported or interpreter exiting
            pass

    def __reduce__(self):
        if self.closed:
            raise ValueError("cannot share a closed SharedRegion")
        if "fds" not in self.__dict__:
            raise ValueError("only the process that created the region can pass it on")
        return (_attach, (reduction.DupFd(self.fds[0]), reduction.DupFd(self.fds[1]),
                          self.data_bytes, self.meta_bytes))


def _attach(data_dup, meta_dup, data_bytes: int, meta_bytes: int) -> SharedRegion:
    """Map a region received from another process (pickle hook)."""
    region = SharedRegion.__new__(SharedRegion)
    region.data_bytes, region.meta_bytes = data_bytes, meta_bytes
    data_fd, meta_fd = data_dup.detach(), meta_dup.detach()
    try:
        region._map(data_fd, meta_fd)
    finally:
        os.close(data_fd)
        os.close(meta_fd)
    return region
