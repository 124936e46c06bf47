"""The name table of cache policies: adding one touches its file and one line here."""

from __future__ import annotations

from typing import Dict, Type

from .base import CachePolicy
from .importance import ImportanceCache
from .lru import LRUCache
from .minio import MinIOCache
from .none import NoCache

__all__ = ["POLICIES", "make_policy"]

POLICIES: Dict[str, Type[CachePolicy]] = {
    "none": NoCache,
    "lru": LRUCache,
    "minio": MinIOCache,
    "importance": ImportanceCache,
}


def make_policy(config, capacity: int, n_samples: int) -> CachePolicy:
    """Instantiate the policy named by ``config.policy`` for ``capacity`` slots.

    Raises:
        ValueError: unknown policy name (the message lists the known ones).
    """
    try:
        cls = POLICIES[config.policy]
    except KeyError:
        raise ValueError(f"policy={config.policy!r} is not a cache policy; choose one "
                         f"of {sorted(POLICIES)}") from None
    return cls(config, capacity, n_samples)
