"""BatchPlan: what the sampler hands to ``ImpactDataset.__getitems__`` for one batch.

PyTorch passes whatever a batch sampler yields straight to the dataset's ``__getitems__``
(or iterates it and calls ``__getitem__``), so the sampler yields one small picklable
object per batch holding numpy arrays rather than a list of Python objects per sample.
Iterating a plan yields the sample indices to deliver, so the sampler also works with
any ordinary map-style dataset.
"""

from __future__ import annotations

from typing import Iterator, Optional

import numpy as np

__all__ = ["BatchPlan", "TIER_NONE", "TIER_H", "TIER_L",
           "LOC_SOURCE", "LOC_H", "LOC_L", "LOC_STAGING"]

# Tier a policy gives a planned sample.
TIER_NONE, TIER_H, TIER_L = 0, 1, 2
# Where the cache directory expects a sample's bytes to be.
LOC_SOURCE, LOC_H, LOC_L, LOC_STAGING = 0, 1, 2, 3


class BatchPlan:
    """One batch of planned samples.

    Attributes:
        indices: int64 indices of the samples to deliver (after any substitution); the
            index reported with each sample.
        tier: int8 tier per sample (``TIER_*``).
        location: int8 expected location of each sample's bytes (``LOC_*``).
        slot: int64 store entry per sample (-1 where ``location`` is ``LOC_SOURCE``).
        generation: int64 generation tag the store entry must carry (-1 if none).
        planned: int64 indices the policy planned before substitution.
        epoch: epoch of the plan. position: index of the batch within the epoch.
        seq: batch sequence number of the cache pipeline (-1 without a cache); the
            reader waits for it to be marked ready before copying from the store.
        deferred: True when the cache service annotates the batch: ``indices`` are
            then the planned ones and ``location`` says nothing; the reader finds the
            annotation (indices after substitution, locations, slots, generations) in
            the dataset's :class:`~impact_loader.annotations.SharedAnnotations` under
            ``seq`` once the batch is ready.
    """

    __slots__ = ("indices", "tier", "location", "slot", "generation", "planned",
                 "epoch", "position", "seq", "deferred")

    def __init__(self, indices: np.ndarray, *, tier: Optional[np.ndarray] = None,
                 location: Optional[np.ndarray] = None, slot: Optional[np.ndarray] = None,
                 generation: Optional[np.ndarray] = None,
                 planned: Optional[np.ndarray] = None, epoch: int = 0,
                 position: int = 0, seq: int = -1, deferred: bool = False) -> None:
        n = len(indices)
        self.indices = np.asarray(indices, dtype=np.int64)
        self.tier = _or_fill(tier, n, TIER_NONE, np.int8)
        self.location = _or_fill(location, n, LOC_SOURCE, np.int8)
        self.slot = _or_fill(slot, n, -1, np.int64)
        self.generation = _or_fill(generation, n, -1, np.int64)
        self.planned = self.indices if planned is None else np.asarray(planned, np.int64)
        self.epoch = int(epoch)
        self.position = int(position)
        self.seq = int(seq)
        self.deferred = bool(deferred)

    def __len__(self) -> int:
        return len(self.indices)

    def __iter__(self) -> Iterator[int]:
        return iter(self.indices.tolist())

    def __getstate__(self):
        state = tuple(getattr(self, k) for k in self.__slots__)
        if self.deferred:  # the default arrays: rebuilt on arrival, not sent
            state = state[:2] + (None, None, None, None) + state[6:]
        return state

    def __setstate__(self, state) -> None:
        for k, v in zip(self.__slots__, state):
            setattr(self, k, v)
        if self.location is None:
            n = len(self.indices)
            self.location = np.full(n, LOC_SOURCE, np.int8)
            self.slot = np.full(n, -1, np.int64)
            self.generation = np.full(n, -1, np.int64)
            self.planned = self.indices

    def __repr__(self) -> str:
        return (f"BatchPlan(epoch={self.epoch}, position={self.position}, "
                f"n={len(self)}, indices={self.indices[:8].tolist()}...)")


def _or_fill(arr: Optional[np.ndarray], n: int, fill: int, dtype) -> np.ndarray:
    if arr is None:
        return np.full(n, fill, dtype=dtype)
    out = np.asarray(arr, dtype=dtype)
    if len(out) != n:
        raise ValueError(f"plan array of length {len(out)} does not match {n} indices")
    return out
