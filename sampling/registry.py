"""The name table of selection policies: adding one touches its file and one entry here."""

from __future__ import annotations

from typing import Dict, Type

from .config import SamplingConfig
from .impact import ImpactPolicy
from .importance import ImportancePolicy
from .selective import SelectivePolicy
from .uniform import UniformPolicy

__all__ = ["POLICIES", "make_policy"]

POLICIES: Dict[str, Type] = {
    "uniform": UniformPolicy,
    "importance": ImportancePolicy,
    "selective": SelectivePolicy,
    "impact": ImpactPolicy,
}


def make_policy(name: str, config: SamplingConfig):
    """Instantiate the policy registered under ``name``.

    Raises:
        ValueError: ``name`` is not registered; the message lists the valid names.
    """
    try:
        cls = POLICIES[name]
    except (KeyError, TypeError):
        raise ValueError(f"unknown sampling policy {name!r}; choose one of "
                         f"{', '.join(map(repr, POLICIES))}") from None
    return cls(config)
