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
                   smoothed_probs)
from .config import SamplingConfig
from .table import ImportanceTable

__all__ = ["ImpactPolicy", "epoch_kind"]


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
        scores = table.importance()
        kind = epoch_kind(epoch, cfg)
        reevaluated = 0
        if kind != KIND_SELECT:
            chosen = rng.permutation(n).astype(np.int64, copy=False)
        else:
            # trained_fraction is the whole epoch: k samples chosen by importance plus
            # r re-evaluated ones, r = reeval_share of the n - k left out.
            budget = min(n, max(1, int(cfg.trained_fraction * n + 0.5)))
            share = cfg.reeval_share
            k = budget if share >= 1 and budget == n else (
                int(round((budget - share * n) / (1 - share))) if share < 1 else 0)
            k = min(budget, max(0, k))
            probs = smoothed_probs(scores, cfg.smoothing)
            # Weighted sampling without replacement: the k smallest Exp(1) / p_i.
            # Zero-probability samples get an infinite key and come last.
            with np.errstate(divide="ignore"):
                keys = rng.standard_exponential(n) / probs
            if 0 < k < n:
                picked = np.argpartition(keys, k - 1)[:k]
            else:
                picked = np.arange(n) if k == n else np.empty(0, np.int64)
            rest = np.ones(n, dtype=bool)
            rest[picked] = False
            rest_idx = np.flatnonzero(rest)
            r = budget - k
            if r > 0:
                # Stalest first; the random fraction breaks ties between equal epochs.
                age_key = table.last_epoch[rest_idx] + rng.random(rest_idx.size)
                if r < rest_idx.size:
                    stale = rest_idx[np.argpartition(age_key, r - 1)[:r]]
                else:
                    stale = rest_idx
                picked = np.concatenate([picked, stale])
                reevaluated = int(r)
            chosen = rng.permutation(picked).astype(np.int64, copy=False)
        tier = assign_tiers(scores[chosen], cfg.h_share)
        return Selection(chosen, tier, None, kind, reevaluated)
