"""ImpactLoader: a DataLoader that builds the ImportanceSampler and measures data-wait."""

from __future__ import annotations

import time
from typing import Any, Dict, Iterator, List

from torch.utils.data import DataLoader

from ._metrics_histogram import Histogram
from .collate import DEFAULT_INLINE_BYTES, InlineCollate, checked_size
from .sampler import ImportanceSampler

__all__ = ["ImpactLoader"]


class ImpactLoader(DataLoader):
    """A ``torch.utils.data.DataLoader`` over an ImpactDataset with an ImportanceSampler.

    Equivalent to ``DataLoader(dataset, batch_sampler=ImportanceSampler(...), ...)``
    plus the time the training loop waits for each batch (data-wait).

    Args:
        dataset: an :class:`ImpactDataset` (any map-style dataset works; the cache
            is used only with an ImpactDataset that has ``cache_bytes > 0``).
        batch_size: samples per batch.
        policy: selection policy name (see :class:`ImportanceSampler`).
        seed: seed of the epoch plans.
        drop_last: drop the last incomplete batch.
        sampler_options: keyword arguments for :class:`ImportanceSampler`
            (``num_replicas``, ``rank``, ``config`` or config fields).
        inline_bytes: with workers, batch tensors up to this many bytes are sent to
            the training process inside the batch's message instead of through a
            shared-memory segment each (see :class:`InlineCollate`: much cheaper for
            small tensors); 0 keeps PyTorch's path for every tensor.
        **dataloader_kwargs: passed to ``DataLoader`` (``num_workers``,
            ``pin_memory``, ``collate_fn``, ``persistent_workers``, ...).

    Attributes:
        sampler: the :class:`ImportanceSampler` (also ``batch_sampler``).
        data_wait: seconds the loop waited for each batch of the last epoch.
        step_time: seconds between consecutive batches of the last epoch.
        data_wait_histogram: data-wait per batch since construction, in fixed
            buckets (exported by :mod:`impact_loader.metrics`).
    """

    def __init__(self, dataset: Any, batch_size: int, *, policy: str = "impact",
                 seed: int = 0, drop_last: bool = False,
                 sampler_options: Dict[str, Any] = None,
                 inline_bytes: int = DEFAULT_INLINE_BYTES, **dataloader_kwargs: Any) -> None:
        for bad in ("sampler", "batch_sampler", "shuffle", "batch_size"):
            if bad in dataloader_kwargs:
                raise ValueError(f"{bad}= cannot be given to ImpactLoader, which builds "
                                 "its own ImportanceSampler; use DataLoader(dataset, "
                                 "batch_sampler=...) to bring your own")
        sampler = ImportanceSampler(dataset, batch_size, policy=policy, seed=seed,
                                    drop_last=drop_last, **(sampler_options or {}))
        workers = dataloader_kwargs.get("num_workers", 0)
        checked_size(inline_bytes, "inline_bytes")
        if workers > 0:
            # Workers that live across epochs: restarting them each epoch costs a
            # fork (or a spawn and import) per worker, which a fast job notices.
            dataloader_kwargs.setdefault("persistent_workers", True)
            collate = dataloader_kwargs.get("collate_fn")
            if not isinstance(collate, InlineCollate):
                dataloader_kwargs["collate_fn"] = InlineCollate(collate, inline_bytes)
        pipeline = getattr(dataset, "pipeline", None)
        if pipeline is not None:
            # How many batches the DataLoader may hold ahead of the loop (the safe
            # distance for reusing cache memory).
            factor = dataloader_kwargs.get("prefetch_factor") or 2
            pipeline.outstanding = max(1, workers * factor) + 1
        super().__init__(dataset, batch_sampler=sampler, **dataloader_kwargs)
        object.__setattr__(self, "sampler", sampler)  # DataLoader guards this name
        self.data_wait: List[float] = []
        self.step_time: List[float] = []
        self.data_wait_histogram = Histogram()
        self._elapsed = 0.0  # from iter() to the last batch received, last epoch

    def __iter__(self) -> Iterator[Any]:
        self.data_wait = []
        self.step_time = []
        self._elapsed = 0.0
        begin = time.perf_counter()
        it = super().__iter__()
        last = None
        while True:
            start = time.perf_counter()
            try:
                batch = next(it)
            except StopIteration:
                return
            now = time.perf_counter()
            self.data_wait.append(now - start)
            self.data_wait_histogram.observe(now - start)
            if last is not None:
                self.step_time.append(now - last)
            last = now
            self._elapsed = now - begin
            yield batch

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch of the next pass (as ``sampler.set_epoch``)."""
        self.sampler.set_epoch(epoch)

    def update(self, indices: Any, losses: Any) -> None:
        """Report per-sample losses (as ``sampler.update``)."""
        self.sampler.update(indices, losses)

    def stats(self) -> Dict[str, Any]:
        """Sampler and cache pipeline counters, worker reads, last epoch's data-wait.

        The ``worker_*`` keys count the reads the dataset made in every process (the
        DataLoader workers, and the main process: ``num_workers=0`` reads and the
        record-size probe); see ``WorkerCounters.stats``. Without a cache
        (``cache_bytes=0`` or a dataset other than ImpactDataset) ``hits``,
        ``substitutions``, ``prefetched`` and ``waited_batches`` are 0.
        """
        out: Dict[str, Any] = dict(self.sampler.stats())
        pipeline = getattr(self.dataset, "pipeline", None)
        if pipeline is not None:
            out.update(pipeline.stats())
        else:  # no cache: nothing is hit, substituted or prefetched
            out.update(hits=0, substitutions=0, prefetched=0, waited_batches=0)
        counters = getattr(self.dataset, "counters", None)
        if counters is not None:
            out.update(counters.stats())
        out.update(data_wait_seconds=sum(self.data_wait), batches=len(self.data_wait),
                   data_wait_share=self.data_wait_share)
        return out

    @property
    def data_wait_share(self) -> float:
        """Share of the last (or current) epoch's time, from ``iter()`` to the last
        batch received, that the loop spent waiting for batches (0 before any batch)."""
        wait, elapsed = sum(list(self.data_wait)), self._elapsed
        return wait / elapsed if elapsed > 0 else 0.0
