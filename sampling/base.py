"""The selection-policy interface and the helpers policies share.

A policy turns (importance table, epoch, seeded generator) into a ``Selection``: the
epoch's global plan (sample indices in visiting order plus a tier per entry) and, when
the policy samples non-uniformly on purpose, the probabilities that unbias the loss.
Policies are pure: same table state, epoch and generator seed, same selection.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

try:  # Python >= 3.8
    from typing import Protocol
except ImportError:  # pragma: no cover
    from typing_extensions import Protocol  # type: ignore

import numpy as np

from impact_loader.plan import TIER_H, TIER_L, TIER_NONE

from .config import SamplingConfig
from .table import ImportanceTable

__all__ = ["Selection", "Policy", "epoch_rng", "smoothed_probs", "assign_tiers",
           "index_dtype", "shuffled", "KIND_FULL", "KIND_WARMUP", "KIND_REFRESH",
           "KIND_SELECT"]

# What kind of epoch a selection is (for stats and for readers of the plan).
KIND_FULL, KIND_WARMUP, KIND_REFRESH, KIND_SELECT = "full", "warmup", "refresh", "select"


@dataclass(frozen=True)
class Selection:
    """One epoch's global plan, before it is split between ranks and into batches.

    Attributes:
        indices: sample indices in visiting order (may repeat if the policy draws with
            replacement), of ``index_dtype(N)``: int32, int64 only for N > 2**31.
        tier: int8 tier per entry (``TIER_H``, ``TIER_L`` or ``TIER_NONE``).
        probs: float64 probability of drawing each of the N samples, when the policy
            draws non-uniformly and the loss should be weighted by ``1 / (N p)``; None
            means weights of one.
        kind: ``KIND_*``: full pass, warm-up, refresh or importance selection.
        reevaluated: how many entries were added to rescore stale samples.
    """

    indices: np.ndarray
    tier: np.ndarray
    probs: Optional[np.ndarray] = None
    kind: str = KIND_FULL
    reevaluated: int = 0


class Policy(Protocol):
    """What every selection policy provides (one class per file, see ``registry``)."""

    name: str

    def __init__(self, config: SamplingConfig) -> None: ...

    def select(self, table: ImportanceTable, epoch: int,
               rng: np.random.Generator) -> Selection:
        """Return the plan of ``epoch`` from the table's current state."""
        ...


def epoch_rng(seed: int, epoch: int, stream: int = 0) -> np.random.Generator:
    """The generator of one epoch: a pure function of (seed, epoch, stream).

    No generator state is carried between epochs, so resuming needs only the seed.
    """
    return np.random.Generator(np.random.PCG64(np.random.SeedSequence(
        [int(seed), int(epoch), int(stream)])))


def index_dtype(n: int) -> np.dtype:
    """Dtype of plan indices for ``n`` samples: int32 when every index fits, else int64.

    A plan is held for a whole epoch (and by the cache layer), so int32 halves its
    memory; numpy indexes with either.
    """
    return np.dtype(np.int32 if n <= 1 << 31 else np.int64)


def shuffled(indices: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """``indices`` shuffled in place and returned: the order ``rng.permutation(indices)``
    gives (same draws, any integer dtype), without its copy."""
    rng.shuffle(indices)
    return indices


def smoothed_probs(scores: np.ndarray, smoothing: float) -> np.ndarray:
    """``p = (1 - smoothing) * s / sum(s) + smoothing / N`` (uniform if ``sum(s) == 0``).

    Args:
        scores: non-negative score per sample.
        smoothing: share of the mass spread uniformly, in [0, 1].
    """
    n = scores.size
    total = float(scores.sum())
    if not total > 0 or not np.isfinite(total):
        return np.full(n, 1.0 / n)
    p = scores * ((1.0 - smoothing) / total)
    p += smoothing / n
    return p


def assign_tiers(scores: np.ndarray, h_share: float,
                 indices: Optional[np.ndarray] = None) -> np.ndarray:
    """Mark the top ``h_share`` of entries by score ``TIER_H`` and the rest ``TIER_L``.

    Args:
        scores: importance of each planned entry, or of every sample if ``indices``.
        h_share: share of entries to mark H, in [0, 1]; the count is rounded half up.
        indices: the planned sample indices; entries are then ranked by
            ``scores[indices]`` (gathered once and negated in place, no second copy).
    """
    m = scores.size if indices is None else indices.size
    tier = np.full(m, TIER_L, dtype=np.int8)
    k = min(m, int(h_share * m + 0.5))
    if k >= m:
        tier[:] = TIER_H
    elif k > 0:
        key = np.negative(scores) if indices is None else scores[indices]
        if indices is not None:
            np.negative(key, out=key)
        top = np.argpartition(key, k - 1)[:k]
        tier[top] = TIER_H
    return tier


def no_tiers(m: int) -> np.ndarray:
    """``TIER_NONE`` for ``m`` entries (policies that do not rank samples)."""
    return np.full(m, TIER_NONE, dtype=np.int8)
