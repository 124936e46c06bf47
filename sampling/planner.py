"""Split an epoch's global plan between ranks and into batches (pure numpy).

Every rank computes the same global plan; rank ``r`` of ``R`` takes entries
``r, r + R, r + 2R, ...`` of the plan padded (cyclically, from its start) to a multiple
of ``R``, exactly like ``torch.utils.data.DistributedSampler``, so shares are disjoint
(apart from the padding) and of equal length. Each share is then cut into batches;
``drop_last`` drops a final short batch, as in ``torch.utils.data.BatchSampler``.
"""

from __future__ import annotations

from typing import Tuple

import numpy as np

__all__ = ["RankPlan", "shard", "num_batches", "truncate"]


def shard(indices: np.ndarray, tier: np.ndarray, num_replicas: int,
          rank: int) -> Tuple[np.ndarray, np.ndarray]:
    """Return this rank's ``(indices, tier)`` share of a global plan.

    Args:
        indices: global plan (int32 or int64 indices).
        tier: int8 tier per entry.
        num_replicas: number of ranks, >= 1.
        rank: this rank, in [0, num_replicas).
    """
    if num_replicas == 1:
        return indices, tier
    m = indices.size
    if m == 0:
        return indices, tier
    per_rank = -(-m // num_replicas)
    total = per_rank * num_replicas
    # np.resize repeats the array cyclically, which is DistributedSampler's padding.
    padded_idx = np.resize(indices, total) if total != m else indices
    padded_tier = np.resize(tier, total) if total != m else tier
    return padded_idx[rank::num_replicas].copy(), padded_tier[rank::num_replicas].copy()


def num_batches(share_length: int, batch_size: int, drop_last: bool) -> int:
    """Number of batches a share of ``share_length`` samples makes."""
    if drop_last:
        return share_length // batch_size
    return -(-share_length // batch_size)


def truncate(indices: np.ndarray, tier: np.ndarray, batch_size: int,
             drop_last: bool) -> Tuple[np.ndarray, np.ndarray]:
    """Drop the entries of a final short batch when ``drop_last`` (views, no copy)."""
    if not drop_last:
        return indices, tier
    keep = (indices.size // batch_size) * batch_size
    return indices[:keep], tier[:keep]


class RankPlan:
    """One epoch's plan as seen by one rank: its share, cut into batches.

    Attributes:
        epoch: the epoch planned.
        selection: the global ``Selection`` every rank computed identically.
        indices: this rank's share (after padding and ``drop_last``), of the global
            plan's dtype (int32 unless N > 2**31).
        tier: int8 tier per entry of ``indices``.
        batch_size: samples per batch. num_batches: batches in the share.
        cache: scratch space for values derived from the plan (e.g. weight tensors),
            dropped with the plan.
    """

    __slots__ = ("epoch", "selection", "indices", "tier", "batch_size", "num_batches",
                 "cache")

    def __init__(self, epoch: int, selection, *, num_replicas: int, rank: int,
                 batch_size: int, drop_last: bool) -> None:
        self.epoch = int(epoch)
        self.selection = selection
        idx, tier = shard(selection.indices, selection.tier, num_replicas, rank)
        self.indices, self.tier = truncate(idx, tier, batch_size, drop_last)
        for arr in (selection.indices, selection.tier, self.indices, self.tier):
            arr.flags.writeable = False  # shared with state_dict(); never modified
        self.batch_size = int(batch_size)
        self.num_batches = num_batches(idx.size, batch_size, drop_last)
        self.cache: dict = {}

    def batch(self, position: int) -> Tuple[np.ndarray, np.ndarray]:
        """``(indices, tier)`` of batch ``position`` (views into the share)."""
        lo = position * self.batch_size
        hi = lo + self.batch_size
        return self.indices[lo:hi], self.tier[lo:hi]
