"""ImpactDataset: the map-style Dataset that DataLoader workers read through.

Workers are the hands (see DESIGN.md): for each item of a :class:`BatchPlan` they copy
the bytes out of the shared store when the plan says they are there, read everything
else from the source with one ``read_many`` call, decode, and transform. A worker never
changes cache metadata; bytes missing, evicted or torn (generation mismatch) are read
from the source, so the cache can only make things faster, never wrong.

Every item is ``(sample, index)`` with the index actually delivered, so with the
default collate a batch is ``(samples, indices)``.

Forked workers: a worker's first batch moves every object it inherited into the garbage
collector's permanent generation (``gc.freeze()``, once per worker process). Otherwise
the worker's first full collection walks the parent's objects and writes to their
headers, which turns every page holding them private: about 35 MiB per worker on the
memory benchmark (``benchmarks/memory.py``), once, at the second epoch. The main
process is never frozen.

Counting: every read is counted in :attr:`ImpactDataset.counters`, a table shared with
the DataLoader workers (see :mod:`impact_loader.counters`), so the main process sees
what the workers read (``ImpactLoader.stats()``, :mod:`impact_loader.metrics`).
"""

from __future__ import annotations

import gc
import sys
import time
from typing import Any, Callable, List, Optional, Sequence, Tuple

import numpy as np

from ._process import once_per_process
from .counters import WorkerCounters
from .layout import block_bytes_for, cache_layout, probe_sizes
from .readiness import BatchReadiness
from .plan import LOC_SOURCE, BatchPlan
from .source import check_indices

__all__ = ["ImpactDataset", "DEFAULT_STAGING_BYTES"]

#: Shared memory for prefetched samples the cache does not keep (bytes), on top of
#: ``cache_bytes``; pass ``staging_bytes=`` to change it.
DEFAULT_STAGING_BYTES = 32 << 20


class ImpactDataset:
    """A map-style dataset over a Source, reading through the shared cache.

    Args:
        source: any Source (``__len__``, ``read_many``, ``decode``).
        transform: applied to each decoded sample (in the worker), or None.
        cache_bytes: bytes of the shared cache (0 disables caching).
        cache_policy: name of the cache policy (``"importance"``, ``"lru"``,
            ``"minio"``, ``"none"``).
        cache_service: run the cache directory, the annotator and the storage reads in
            a helper process (the *cache service*, :mod:`impact_loader._service`)
            instead of background threads of this process, so that they never hold
            this process's GIL while the training loop runs (``benchmarks/RESULTS.md``
            section 8). Needs ``fork``. Default None: on Linux, False elsewhere.
        **cache_options: further :class:`impact_loader.cache.config.CacheConfig`
            fields (``package_size``, ``h_fraction``, ``substitution``,
            ``staging_bytes`` — default :data:`DEFAULT_STAGING_BYTES`, ...).

    Attributes:
        counters: the :class:`impact_loader.counters.WorkerCounters` of every process
            reading through this dataset (cache hits and misses per tier, source
            requests, bytes and latency); ``ImpactLoader.stats()`` and the metrics
            exporter sum them.

    Raises:
        ValueError: ``cache_bytes`` is negative, or a cache option is invalid.
        TypeError: ``source`` does not implement the Source protocol.
    """

    def __init__(self, source: Any, transform: Optional[Callable[[Any], Any]] = None, *,
                 cache_bytes: int = 0, cache_policy: str = "importance",
                 cache_service: Optional[bool] = None, **cache_options: Any) -> None:
        for name in ("__len__", "read_many", "decode"):
            if not hasattr(source, name):
                raise TypeError(f"source {source!r} has no {name}(); a source needs "
                                "__len__, read_many(indices) and decode(raw)")
        if isinstance(cache_bytes, bool) or not isinstance(cache_bytes, (int, np.integer)):
            raise ValueError(f"cache_bytes={cache_bytes!r} must be an int number of bytes")
        if cache_bytes < 0:
            raise ValueError(f"cache_bytes={cache_bytes} must be >= 0; pass 0 to disable "
                             "the cache")
        if cache_service is None:
            cache_service = sys.platform.startswith("linux")
        if not isinstance(cache_service, bool):
            raise TypeError(f"cache_service={cache_service!r} must be True, False or None "
                            "(None: True on Linux)")
        self.source = source
        self.transform = transform
        self.cache_service = cache_service
        self.service = None  # the CacheService process, once a sampler attached
        self._local_directory = None  # this process's directory object, handed over
        self.cache_bytes = int(cache_bytes)
        self.cache_policy = cache_policy
        self.cache_options = dict(cache_options)
        self.directory = None  # the main process's CacheDirectory, see _make_directory
        self.store = None
        self.pipeline = None  # set when an ImportanceSampler attaches
        self.record_blocks = 1  # store blocks of a typical record (set with the cache)
        self.readiness = None  # BatchReadiness shared with the workers (with a cache)
        self.annotations = None  # the cache service's SharedAnnotations (service only)
        # Shared with the workers; made before the first read, so the size probe counts.
        self.counters = WorkerCounters()
        if self.cache_bytes > 0:
            self._probe = probe_sizes(_Counted(self))
            self._make_directory()
            self.readiness = BatchReadiness()
        # Counts of this process only (every process's are in self.counters).
        self.store_hits = 0
        self.source_reads = 0

    def _make_directory(self, **layout: Any) -> None:
        """(Re)build the cache directory; ``layout`` fills options the user left unset."""
        from .cache.config import CacheConfig
        from .cache.directory import CacheDirectory

        self._stop_service()
        if self.directory is not None:
            self.directory.close()
        options = dict(self.cache_options)
        block = options.setdefault("block_bytes", block_bytes_for(self._probe))
        # Misses the cache does not keep still go through the prefetcher, which parks
        # their bytes in staging until the batch is consumed; without it workers would
        # read them one request at a time.
        options.setdefault("staging_bytes", DEFAULT_STAGING_BYTES)
        for name, value in layout.items():
            options.setdefault(name, value)
        config = CacheConfig(cache_bytes=self.cache_bytes, policy=self.cache_policy,
                             **options)
        self.directory = CacheDirectory(n_samples=len(self.source), config=config)
        self.store = self.directory.store
        self.record_blocks = int(np.ceil(np.mean(-(-self._probe // block))))

    def _attach_sampler(self, sampler: Any, **options: Any) -> None:
        """Make ``sampler`` annotate its plans through this dataset's cache pipeline.

        The cache is laid out for the sampler's tiers (see :func:`cache_layout`) unless
        the options were given explicitly; an unused directory is rebuilt to match.
        """
        if self.directory is None:
            return
        from .pipeline import CachePipeline

        first_seq = 0
        if self.pipeline is not None:
            self.pipeline.close()
            first_seq = self.pipeline.next_seq  # batch numbers go on
            self.pipeline = None
        config = self.directory.config
        policy = getattr(sampler, "policy_name", None)
        sampling = getattr(sampler, "config", None)
        h_fraction, tiers = cache_layout(
            self.cache_policy, self.cache_bytes, n_samples=len(self.source),
            record_bytes=self.record_blocks * config.block_bytes, policy=policy,
            h_share=getattr(sampling, "h_share", None),
            batch_size=getattr(sampler, "batch_size", 1), package_size=config.package_size,
            planned_share=(getattr(sampling, "trained_fraction", 1.0)
                           if policy == "impact" else 1.0))
        if (h_fraction is not None and "h_fraction" not in self.cache_options
                and h_fraction != config.h_fraction
                and self.directory.stats()["planned"] == 0):
            self._make_directory(h_fraction=h_fraction)
        # An explicit split asks for the H/L design even when everything would fit.
        options.setdefault("tiers", tiers or "h_fraction" in self.cache_options)
        options.setdefault("first_seq", first_seq)
        if self.cache_service and self.service is None:
            self._start_service(int(getattr(sampler, "batch_size", 1)))
        self.pipeline = CachePipeline(sampler, self, **options)
        if self.service is not None:  # its table, made wide enough for this sampler
            self.annotations = self.service.table
        sampler.annotator = self.pipeline

    def _start_service(self, batch_size: int) -> None:
        """Hand the directory over to a new cache service process."""
        from ._service import CacheService, RemoteDirectory

        self.service = CacheService(self, batch_size=batch_size)
        self.annotations = self.service.table
        self._local_directory = self.directory
        self.directory = RemoteDirectory(self.service, store=self.store)

    def _stop_service(self) -> None:
        """Stop the cache service (it closes its directory); this process's directory
        object is put back, to be closed or replaced."""
        if self.service is None:
            return
        self.service.close()
        self.service = None
        self.annotations = None  # the service's (it closes it)
        self.directory, self._local_directory = self._local_directory, None

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        state["directory"] = None  # metadata and threads stay in the main process
        state["pipeline"] = None
        state["service"] = state["_local_directory"] = None
        return state

    def __len__(self) -> int:
        return len(self.source)

    def _finish(self, raw: Any) -> Any:
        if isinstance(raw, bytes):
            # Decoded arrays are views of the buffer; a writable one gives writable
            # arrays, which torch.from_numpy and in-place transforms need.
            raw = bytearray(raw)
        sample = self.source.decode(raw)
        return self.transform(sample) if self.transform is not None else sample

    def _read_source(self, indices: Any) -> List[Any]:
        """``source.read_many(indices)``, counted (requests, records, bytes, latency)."""
        start = time.perf_counter()
        raws = self.source.read_many(indices)
        self.counters.record_source(len(raws), sum(len(r) for r in raws),
                                    time.perf_counter() - start)
        return raws

    def __getitem__(self, index: int) -> Tuple[Any, int]:
        """Read sample ``index`` from the source (no cache): ``(sample, index)``."""
        return self.__getitems__([index])[0]

    def __getitems__(self, plan: Any) -> List[Tuple[Any, int]]:
        """Read one batch: a :class:`BatchPlan` or a sequence of int indices."""
        _freeze_inherited()
        if not isinstance(plan, BatchPlan):
            idx = check_indices(list(plan), len(self.source), "ImpactDataset")
            raws = self._read_source(idx)
            self.counters.record_items(_ZERO, (len(raws), 0, 0))
            return [(self._finish(r), i) for r, i in zip(raws, idx.tolist())]
        indices, location, slot, generation = self._annotation(plan)
        raws: List[Any] = [None] * len(indices)
        store = self.store
        found: List[int] = []
        planned_cached = store_bytes = 0
        if store is not None:
            cached = np.flatnonzero(location != LOC_SOURCE).tolist()
            if cached and plan.seq >= 0 and self.readiness is not None and not plan.deferred:
                # Handed over before its reads landed: wait for them (a failed or
                # late read leaves its entry empty; the source serves it below).
                self.readiness.wait(plan.seq)
            slots, gens = slot.tolist(), generation.tolist()
            for k in cached:
                data = store.read(slots[k], gens[k])
                if data is not None:
                    raws[k] = data
                    found.append(k)
                    store_bytes += len(data)
            planned_cached = len(cached)
            self.store_hits += len(found)
            if plan.seq >= 0 and self.readiness is not None:
                self.readiness.mark_copied(plan.seq)  # its entries may now be reused
        missing = [k for k, r in enumerate(raws) if r is None]
        if missing:
            for k, raw in zip(missing, self._read_source(indices[missing])):
                raws[k] = raw
            self.source_reads += len(missing)
        self.counters.record_items(_per_tier(plan.tier, found),
                                   _per_tier(plan.tier, missing),
                                   fallbacks=planned_cached - len(found),
                                   store_bytes=store_bytes)
        return [(self._finish(r), i) for r, i in zip(raws, indices.tolist())]

    def _annotation(self, plan: BatchPlan) -> Tuple[np.ndarray, ...]:
        """``(indices, location, slot, generation)`` of a plan: its own arrays, or for
        a deferred plan the cache service's annotation from the shared table, once
        the batch is ready (its reads, and every earlier batch's, landed). Without it
        (annotating failed, the service died, the row was reused) the planned samples
        are read from the source."""
        if not plan.deferred:
            return plan.indices, plan.location, plan.slot, plan.generation
        table = self.annotations
        if table is not None and self.readiness is not None and plan.seq >= 0:
            self.readiness.wait(plan.seq)
            found = table.read(plan.seq)
            if found is not None and len(found[0]) == len(plan):
                return found
        return plan.indices, plan.location, plan.slot, plan.generation

    def close(self) -> None:
        """Stop prefetching and release the shared cache (main process)."""
        if self.pipeline is not None:
            self.pipeline.close()
            self.pipeline = None
        self._stop_service()
        if self.directory is not None:
            self.directory.close()
        if self.readiness is not None:
            self.readiness.close()
        self.counters.close()  # the workers' counter table is a memfd too
        self.directory = None
        self.store = None
        self.readiness = None


class _Counted:
    """A dataset's source read through its counters (the record-size probe)."""

    def __init__(self, dataset: ImpactDataset) -> None:
        self._dataset = dataset

    def __len__(self) -> int:
        return len(self._dataset.source)

    def read_many(self, indices: Any) -> List[Any]:
        return self._dataset._read_source(indices)


_ZERO = (0, 0, 0)

@once_per_process
def _freeze_inherited() -> None:
    """In a DataLoader worker: ``gc.freeze()`` what the worker inherited (see the module
    docstring); in any other process: nothing."""
    from torch.utils.data import get_worker_info

    if get_worker_info() is not None:
        gc.freeze()


def _per_tier(tier: np.ndarray, positions: List[int]) -> Sequence[int]:
    """How many of ``tier[positions]`` are ``TIER_NONE``, ``TIER_H``, ``TIER_L``."""
    if not positions:
        return _ZERO
    return np.bincount(tier[positions].astype(np.intp), minlength=3).tolist()
