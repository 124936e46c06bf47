"""``impact``: the ImPACT / iCache schedule (the default policy).

- Warm-up: the first ``warmup_epochs`` epochs visit every sample (losses of an untrained
  model say little about importance).
- Refresh: after warm-up, every ``refresh_every``-th epoch visits every sample again, so
  every score is renewed.
- Selection epochs train on ``trained_fraction`` of the samples (the *f* of DESIGN.md's
  physical bound): k of them drawn without replacement with probability proportional
  to the smoothed score (Efraimidis-Spirakis weighted sampling, so high-importance
  samples are likely but not certain to be picked), and the rest of the budget spent on
  ``reeval_share`` of the n - k samples left out, the most stale scores first
  (never-scored samples are the stalest), so a low-importance sample whose loss grows
  comes back. With the defaults (0.5, 0.25): k = N/3 by importance, N/6 re-evaluated.

In every epoch, including warm-up and refresh epochs (the cache layer relies on it), the
top ``h_share`` of the planned samples by importance are H-tier and the rest L-tier.
Weights are one: like Selective Backprop, the selection is deliberately biased.
"""

from __future__ import annotations

import numpy as np

from .base import (KIND_REFRESH, KIND_SELECT, KIND_WARMUP, Selection, assign_tiers,
                   index_dtype, shuffled)
from .config import SamplingConfig
from .table import ImportanceTable

__all__ = ["ImpactPolicy", "epoch_kind"]

# Elements per step when keys are divided by the smoothed probabilities in place.
_CHUNK = 1 << 16


def epoch_kind(epoch: int, config: SamplingConfig) -> str:
    """``KIND_WARMUP``, ``KIND_REFRESH`` or ``KIND_SELECT`` for ``epoch`` (0-based)."""
    if epoch < config.warmup_epochs:
        return KIND_WARMUP
    k = config.refresh_every
    if k and (epoch - config.warmup_epochs + 1) % k == 0:
        return KIND_REFRESH
    return KIND_SELECT


class ImpactPolicy:
    """Warm-up, importance selection with stale re-evaluation, periodic refresh.

    Planning allocates few and small temporaries (the main process keeps what glibc
    once gave it): the float64 scores, one float64 key and one int64 partition per
    sample at the peak, in place where numpy allows; the plan itself is int32 (see
    ``index_dtype``).

    Args:
        config: uses ``warmup_epochs``, ``refresh_every``, ``trained_fraction``,
            ``reeval_share``, ``h_share`` and ``smoothing``.
    """

    name = "impact"

    def __init__(self, config: SamplingConfig) -> None:
        self.config = config

    def select(self, table: ImportanceTable, epoch: int,
               rng: np.random.Generator) -> Selection:
        """Return the plan of ``epoch``: everything, or selected + re-evaluated samples."""
        cfg = self.config
        n = table.n
        scores = table.importance_exact()
        kind = epoch_kind(epoch, cfg)
        dtype = index_dtype(n)
        if kind != KIND_SELECT:
            chosen = shuffled(np.arange(n, dtype=dtype), rng)
            return Selection(chosen, assign_tiers(scores, cfg.h_share, chosen), None, kind)
        # trained_fraction is the whole epoch: k samples chosen by importance plus
        # r re-evaluated ones, r = reeval_share of the n - k left out.
        budget = min(n, max(1, int(cfg.trained_fraction * n + 0.5)))
        share = cfg.reeval_share
        k = budget if share >= 1 and budget == n else (
            int(round((budget - share * n) / (1 - share))) if share < 1 else 0)
        k = min(budget, max(0, k))
        picked = _by_importance(scores, k, cfg.smoothing, rng, dtype)
        r = budget - k
        if r > 0:
            picked = np.concatenate([picked, _stalest(table.last_epoch, picked, r, rng)])
        chosen = shuffled(picked, rng)
        return Selection(chosen, assign_tiers(scores, cfg.h_share, chosen), None,
                         KIND_SELECT, max(0, r))


def _by_importance(scores: np.ndarray, k: int, smoothing: float,
                   rng: np.random.Generator, dtype: np.dtype) -> np.ndarray:
    """``k`` samples drawn without replacement with probability ~ the smoothed score.

    Efraimidis-Spirakis: the k smallest ``Exp(1) / p_i``, ``p = smoothed_probs(scores)``
    computed a chunk at a time into the keys (the same float operations, so the same
    keys). Zero-probability samples get an infinite key and come last.
    """
    n = scores.size
    keys = rng.standard_exponential(n)
    total = float(scores.sum())
    if total > 0 and np.isfinite(total):
        scale, floor = (1.0 - smoothing) / total, smoothing / n
        with np.errstate(divide="ignore"):
            for lo in range(0, n, _CHUNK):
                p = scores[lo:lo + _CHUNK] * scale
                p += floor
                np.divide(keys[lo:lo + _CHUNK], p, out=keys[lo:lo + _CHUNK])
    else:
        keys /= 1.0 / n  # smoothed_probs is uniform then
    if 0 < k < n:
        return np.argpartition(keys, k - 1)[:k].astype(dtype)
    return np.arange(n, dtype=dtype) if k == n else np.empty(0, dtype)


def _stalest(last_epoch: np.ndarray, picked: np.ndarray, r: int,
             rng: np.random.Generator) -> np.ndarray:
    """The ``r`` samples not in ``picked`` scored longest ago (never scored first).

    A random fraction added to the epoch breaks ties between equal epochs.
    """
    rest = np.ones(last_epoch.size, dtype=bool)
    rest[picked] = False
    rest_idx = np.flatnonzero(rest).astype(picked.dtype)
    del rest
    age = rng.random(rest_idx.size)
    age += last_epoch[rest_idx]
    if r >= rest_idx.size:
        return rest_idx
    return rest_idx[np.argpartition(age, r - 1)[:r]]
