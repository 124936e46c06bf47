"""Importance table, selection policies and epoch plans (numpy-only algorithms).

Installed as ``impact_loader.sampling``; import it under that name. The public sampler
that wires these to torch is ``impact_loader.sampler.ImportanceSampler``. The torch-based
distributed helpers live in ``impact_loader.sampling.distributed`` and are not imported
here: the modules of this package import numpy, never torch.
"""

from .base import Policy, Selection, assign_tiers, epoch_rng, smoothed_probs
from .config import SamplingConfig
from .planner import RankPlan, num_batches, shard
from .registry import POLICIES, make_policy
from .table import ImportanceTable

__all__ = [
    "ImportanceTable",
    "POLICIES",
    "Policy",
    "RankPlan",
    "SamplingConfig",
    "Selection",
    "assign_tiers",
    "epoch_rng",
    "make_policy",
    "num_batches",
    "shard",
    "smoothed_probs",
]
