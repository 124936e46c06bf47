"""``selective``: Selective Backprop (Jiang et al., 2019) at planning time.

A sample is kept with probability ``percentile(score) ** beta``, where the percentile
ranks its score among the most recent reported losses (the table's window). Selective
Backprop decides after the forward pass with the fresh loss; here the decision is made
when the epoch is planned, from the sample's running score, so skipped samples are not
even read. A sample never scored is always kept (nothing says it is easy), and every
sample keeps a chance of at least ``smoothing`` so that its score is eventually renewed.
"""

from __future__ import annotations

import numpy as np

from .base import (KIND_FULL, KIND_SELECT, Selection, assign_tiers, index_dtype,
                   shuffled)
from .config import SamplingConfig
from .table import ImportanceTable

__all__ = ["SelectivePolicy", "keep_probability"]


def keep_probability(table: ImportanceTable, beta: float, floor: float) -> np.ndarray:
    """Probability of keeping each sample: ``max(percentile ** beta, floor)``, 1 if unseen.

    Args:
        table: the importance table (scores and recent-loss window).
        beta: selectivity, > 0.
        floor: minimum keep probability, in [0, 1].
    """
    window = np.sort(table.recent_losses())
    if window.size == 0:
        return np.ones(table.n)
    pct = np.searchsorted(window, table.score, side="right") / window.size
    keep = np.maximum(pct ** beta, floor)
    keep[~table.scored] = 1.0
    return keep


class SelectivePolicy:
    """Keep each sample independently with its ``keep_probability``; random order.

    Tiers: the top ``h_share`` of the kept samples by score are H, the rest L. Weights are
    one (like Selective Backprop, the selection is deliberately biased to hard samples).

    Args:
        config: uses ``beta``, ``smoothing`` and ``h_share``.
    """

    name = "selective"

    def __init__(self, config: SamplingConfig) -> None:
        self.config = config

    def select(self, table: ImportanceTable, epoch: int,
               rng: np.random.Generator) -> Selection:
        """Return the kept samples in a random order."""
        keep = keep_probability(table, self.config.beta, self.config.smoothing)
        kept = np.flatnonzero(rng.random(table.n) < keep).astype(index_dtype(table.n))
        kept = shuffled(kept, rng)
        tier = assign_tiers(table.importance_exact(), self.config.h_share, kept)
        kind = KIND_FULL if kept.size == table.n else KIND_SELECT
        return Selection(kept, tier, None, kind)
