"""``uniform``: every sample exactly once per epoch in a seeded random order.

The baseline, like ``torch.utils.data.RandomSampler``; ignores importance entirely.
"""

from __future__ import annotations

import numpy as np

from .base import KIND_FULL, Selection, no_tiers
from .config import SamplingConfig
from .table import ImportanceTable

__all__ = ["UniformPolicy"]


class UniformPolicy:
    """A random permutation of all samples per epoch; tiers ``TIER_NONE``, weights one.

    Args:
        config: sampling configuration (unused; kept for the common interface).
    """

    name = "uniform"

    def __init__(self, config: SamplingConfig) -> None:
        self.config = config

    def select(self, table: ImportanceTable, epoch: int,
               rng: np.random.Generator) -> Selection:
        """Return a permutation of ``range(table.n)`` drawn from ``rng``."""
        order = rng.permutation(table.n).astype(np.int64, copy=False)
        return Selection(order, no_tiers(order.size), None, KIND_FULL)
