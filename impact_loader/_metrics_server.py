"""MetricsServer: the HTTP endpoint of :func:`impact_loader.metrics.serve`.

prometheus-client's own WSGI server on a daemon thread, wrapped so that the caller gets
the bound port (``port=0`` picks a free one) and a way to stop it, and so that a port in
use fails with an error that names the port and the fix.
"""

from __future__ import annotations

import errno
import os
import threading
from typing import Any, List

from .errors import PortInUseError

__all__ = ["MetricsServer", "start"]

_RUNNING: List["MetricsServer"] = []
_RUNNING_LOCK = threading.Lock()


class MetricsServer(int):
    """The bound port of a running metrics server (an ``int``), which can stop it.

    ``metrics.serve()`` returns one: use it as the port number, read :attr:`url`, and
    :meth:`close` it (or use ``with``) when training ends.
    """

    _httpd: Any
    _thread: threading.Thread
    addr: str

    def __new__(cls, port: int, httpd: Any, thread: threading.Thread,
                addr: str) -> "MetricsServer":
        self = super().__new__(cls, port)
        self._httpd, self._thread, self.addr = httpd, thread, addr
        return self

    @property
    def port(self) -> int:
        """The TCP port the server listens on."""
        return int(self)

    @property
    def url(self) -> str:
        """``http://addr:port/metrics`` (an IPv6 address in brackets)."""
        host = f"[{self.addr}]" if ":" in self.addr else self.addr
        return f"http://{host}:{int(self)}/metrics"

    @property
    def closed(self) -> bool:
        """Whether :meth:`close` was called."""
        return self._httpd is None

    def close(self) -> None:
        """Stop serving and free the port (idempotent; waits for the thread)."""
        httpd, self._httpd = self._httpd, None
        if httpd is None:
            return
        httpd.shutdown()
        httpd.server_close()
        self._thread.join(timeout=10)
        with _RUNNING_LOCK:
            _RUNNING[:] = [s for s in _RUNNING if s is not self]

    def __enter__(self) -> "MetricsServer":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "closed" if self.closed else self.url
        return f"MetricsServer({int(self)}, {state})"


def start(port: int, addr: str, registry: Any) -> MetricsServer:
    """Serve ``registry`` on ``addr:port`` from a daemon thread.

    Raises:
        ValueError: ``port`` is not an int in [0, 65535].
        PortInUseError: the port is taken (an ``OSError`` with ``errno`` EADDRINUSE).
        OSError: any other failure to bind (e.g. an address not on this host).
    """
    from prometheus_client import start_http_server

    if isinstance(port, bool) or not isinstance(port, int) or not 0 <= port <= 65535:
        raise ValueError(f"port={port!r} must be an int in [0, 65535]; pass 0 to let the "
                         "system pick a free port")
    if not isinstance(addr, str) or not addr:
        raise ValueError(f"addr={addr!r} must be a host address such as '127.0.0.1' "
                         "(or '0.0.0.0' to accept scrapes from other hosts)")
    try:
        httpd, thread = start_http_server(port, addr=addr, registry=registry)
    except OSError as exc:
        if exc.errno != errno.EADDRINUSE:
            raise
        raise PortInUseError(
            errno.EADDRINUSE,
            f"metrics port {port} on {addr} is already in use (another exporter, "
            f"another rank, or an earlier metrics.serve() in this process: stop that one "
            f"with metrics.stop()); pass another port, port=0 for a free one, or "
            f"port=base + local rank under DDP") from exc
    server = MetricsServer(httpd.server_address[1], httpd, thread, addr)
    with _RUNNING_LOCK:
        _RUNNING.append(server)
    return server


def _forget_in_child() -> None:
    """After ``fork``: close the child's copies of the listening sockets.

    A forked process (a DataLoader worker) inherits them; kept open, they would hold the
    port after the parent closes its server, and connections could queue on a process
    that never accepts. The parent's servers are untouched; the child has none.
    """
    global _RUNNING_LOCK
    _RUNNING_LOCK = threading.Lock()  # another thread may have held it at the fork
    for server in _RUNNING:
        httpd = server._httpd
        if httpd is not None:
            httpd.socket.close()
        server._httpd = None
    _RUNNING.clear()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_in_child)


def stop_all() -> int:
    """Close every server :func:`start` opened that is still running; returns how many."""
    with _RUNNING_LOCK:
        running = list(_RUNNING)
    for server in running:
        server.close()
    return len(running)
