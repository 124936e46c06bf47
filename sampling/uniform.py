"""``uniform``: every sample exactly once per epoch in a seeded random order.

The baseline, like ``torch.utils.data.RandomSampler``; ignores importance entirely.
With ``h_share=0`` every entry is marked L-tier, which makes an ``importance`` cache one
L-cache with substitution over uniform epochs (Quiver-style substitutable caching).
"""

from __future__ import annotations

import numpy as np

from impact_loader.plan import TIER_L

from .base import KIND_FULL, Selection, index_dtype, no_tiers, shuffled
from .config import SamplingConfig
from .table import ImportanceTable

__all__ = ["UniformPolicy"]


class UniformPolicy:
    """A random permutation of all samples per epoch, weights one.

    Tiers are ``TIER_NONE`` (no ranking), or ``TIER_L`` for every entry when
    ``config.h_share == 0`` (nothing is important, so everything may be substituted).

    Args:
        config: sampling configuration; only ``h_share`` is read.
    """

    name = "uniform"

    def __init__(self, config: SamplingConfig) -> None:
        self.config = config

    def select(self, table: ImportanceTable, epoch: int,
               rng: np.random.Generator) -> Selection:
        """Return a permutation of ``range(table.n)`` drawn from ``rng``."""
        order = shuffled(np.arange(table.n, dtype=index_dtype(table.n)), rng)
        tier = no_tiers(order.size)
        if self.config.h_share == 0:
            tier[:] = TIER_L
        return Selection(order, tier, None, KIND_FULL)
