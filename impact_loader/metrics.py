"""Prometheus metrics of a training job: data-wait, cache, storage, importance.

Usage::

    from impact_loader import metrics

    loader = il.ImpactLoader(dataset, batch_size=128, num_workers=4)
    metrics.watch(loader)                  # weak reference: nothing is kept alive
    server = metrics.serve(port=9400)      # the bound port; server.url, server.close()
    ...                                    # train
    server.close()                         # or metrics.stop()

or, with an exporter you already run, ``metrics.register(registry)`` (default: the
prometheus-client global ``REGISTRY``) and watch as above. Nothing starts a server, a
thread or a collector unless one of these functions is called.

How it works: the training path only increments plain integers (pipeline counts,
prefetcher counters and latency buckets, the loader's data-wait buckets, and the
counters the DataLoader workers keep in shared memory, see
:mod:`impact_loader.counters`); a scrape reads them from the watched objects on the
server's thread (:class:`ImpactCollector`). Metric names, types and help texts are in
:mod:`impact_loader._metrics_families`; every metric carries the labels ``loader`` (the
name given to :func:`watch`, default ``"train"``) and ``rank``.

Distributed training (DDP): each rank has its own sampler, cache, prefetcher and
workers, so each rank serves its own endpoint, at ``port = base + local_rank`` (one
process per GPU on a node gets ports base..base+n-1), and every metric carries a
``rank`` label taken from the sampler. Serving from rank 0 only would hide the other
ranks' stalls, and the slowest rank sets the pace of a synchronous job. Aggregate in
PromQL, e.g. ``sum by (source) (rate(impact_loader_samples_delivered_total[1m]))``, or
spot the slow rank with ``max by (rank) (...)``. The port is always an explicit
argument (no environment variable is read): ``metrics.serve(port=9400 + local_rank)``.
"""

from __future__ import annotations

import threading
import weakref
from typing import Any, Optional

from ._metrics_collect import ImpactCollector
from ._metrics_server import MetricsServer, start, stop_all

__all__ = ["ImpactCollector", "MetricsServer", "collector", "watch", "unwatch",
           "register", "unregister", "serve", "stop"]

_STATE_LOCK = threading.Lock()
_DEFAULT: list = []  # the module's collector, made on first use
_REGISTERED: "weakref.WeakSet" = weakref.WeakSet()  # registries holding it


def collector() -> ImpactCollector:
    """The collector behind the module-level functions (created on first use)."""
    with _STATE_LOCK:
        if not _DEFAULT:
            _DEFAULT.append(ImpactCollector())
        return _DEFAULT[0]


def watch(obj: Any, *, name: str = "train") -> None:
    """Export the metrics of ``obj`` under ``loader=name`` (weak reference).

    Args:
        obj: an ImpactLoader (everything, data-wait included), an ImpactDataset
            (cache, worker reads, and the sampler attached to it), an
            ImportanceSampler (sampler and prefetch, no worker reads), or a DataLoader
            over an ImpactDataset.
        name: the ``loader`` label (e.g. ``"train"``, ``"val"``); watching another
            object under the same name replaces the first.

    Raises:
        TypeError: ``obj`` is none of the above.
    """
    collector().watch(obj, name=name)


def unwatch(name: str = "train") -> None:
    """Stop exporting what was watched under ``name``."""
    collector().unwatch(name)


def register(registry: Any = None) -> ImpactCollector:
    """Add impact-loader's collector to ``registry`` (idempotent); returns it.

    Args:
        registry: a ``prometheus_client.CollectorRegistry``; None: the global
            ``prometheus_client.REGISTRY`` (what ``start_http_server`` serves by default).

    Returns:
        The :class:`ImpactCollector`; objects are watched with :func:`watch`.

    Raises:
        ValueError: ``registry`` already holds another collector with the same metric
            names (a second ImpactCollector): use one collector per registry.
    """
    if registry is None:
        from prometheus_client import REGISTRY as registry
    coll = collector()
    with _STATE_LOCK:
        if registry not in _REGISTERED:
            registry.register(coll)
            _REGISTERED.add(registry)
    return coll


def unregister(registry: Any = None) -> None:
    """Remove the collector from ``registry`` (default: the global one), if there."""
    if registry is None:
        from prometheus_client import REGISTRY as registry
    coll = collector()
    with _STATE_LOCK:
        if registry in _REGISTERED:
            registry.unregister(coll)
            _REGISTERED.discard(registry)


def serve(port: int = 9400, addr: str = "127.0.0.1", *,
          registry: Any = None) -> MetricsServer:
    """Serve the metrics over HTTP (``/metrics``) from a daemon thread.

    Args:
        port: TCP port; 0 picks a free one. Under DDP use ``base + local_rank``.
        addr: address to listen on; the default accepts local scrapes only, pass
            ``"0.0.0.0"`` for a Prometheus on another host.
        registry: serve this ``CollectorRegistry`` (the collector is registered on it
            if needed); None: a private registry holding only impact-loader's metrics.

    Returns:
        A :class:`MetricsServer`: an ``int`` equal to the bound port, with ``url`` and
        ``close()``. :func:`stop` closes every server this module started.

    Raises:
        PortInUseError: the port is taken (an ``OSError``, ``errno`` EADDRINUSE); the
            message names the port and the fix.
        ValueError: ``port`` is not in [0, 65535] or ``addr`` is empty.
    """
    if registry is None:
        from prometheus_client import CollectorRegistry

        registry = CollectorRegistry(auto_describe=True)
        registry.register(collector())
    else:
        register(registry)
    return start(port, addr, registry)


def stop(server: Optional[MetricsServer] = None) -> None:
    """Close ``server``, or every server :func:`serve` started (idempotent)."""
    if server is not None:
        server.close()
    else:
        stop_all()
