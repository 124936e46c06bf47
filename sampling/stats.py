"""SamplerStats: the counters behind ``ImportanceSampler.stats()``."""

from __future__ import annotations

from typing import Dict

import numpy as np

from impact_loader.plan import TIER_H, TIER_L

from .base import KIND_REFRESH, KIND_WARMUP, Selection

__all__ = ["SamplerStats", "STAT_KEYS"]

STAT_KEYS = ("epochs_planned", "samples_selected", "samples_planned", "tier_h", "tier_l",
             "warmup_epochs", "refreshes", "reevaluated", "updates", "losses_received",
             "nonfinite", "syncs")


class SamplerStats:
    """Monotonic counters (ints) of planning and loss reporting.

    ``samples_selected``, ``tier_h`` and ``tier_l`` count global plans (all ranks);
    ``samples_planned`` counts this rank's shares (padding included, ``drop_last``
    applied); ``nonfinite`` counts losses skipped under ``nonfinite="skip"``.
    """

    __slots__ = ("counts",)

    def __init__(self) -> None:
        self.counts: Dict[str, int] = dict.fromkeys(STAT_KEYS, 0)

    def record_plan(self, selection: Selection, share_size: int) -> None:
        """Count one epoch plan built (its global selection and this rank's share)."""
        c = self.counts
        c["epochs_planned"] += 1
        c["samples_selected"] += int(selection.indices.size)
        c["samples_planned"] += int(share_size)
        c["tier_h"] += int(np.count_nonzero(selection.tier == TIER_H))
        c["tier_l"] += int(np.count_nonzero(selection.tier == TIER_L))
        c["warmup_epochs"] += int(selection.kind == KIND_WARMUP)
        c["refreshes"] += int(selection.kind == KIND_REFRESH)
        c["reevaluated"] += int(selection.reevaluated)

    def record_update(self, received: int, skipped: int) -> None:
        """Count one ``update`` call with ``received`` kept and ``skipped`` losses."""
        c = self.counts
        c["updates"] += 1
        c["losses_received"] += int(received)
        c["nonfinite"] += int(skipped)

    def record_sync(self) -> None:
        """Count one cross-rank merge."""
        self.counts["syncs"] += 1

    def state_dict(self) -> Dict[str, int]:
        """Copy of the counters."""
        return dict(self.counts)

    def load_state_dict(self, state: Dict[str, int]) -> None:
        """Restore counters (unknown keys are ignored, missing ones read 0)."""
        self.counts = dict.fromkeys(STAT_KEYS, 0)
        self.counts.update({k: int(v) for k, v in state.items() if k in STAT_KEYS})
