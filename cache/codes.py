"""Integer codes shared with the sampler's plans, repeated here by value.

``impact_loader.cache`` is pure numpy + stdlib and must not import
``impact_loader.plan`` (that would pull in the torch side), so the codes are
restated; ``tests/test_cache_codes.py`` checks they agree with ``impact_loader.plan``.
"""

from __future__ import annotations

__all__ = ["TIER_NONE", "TIER_H", "TIER_L",
           "LOC_SOURCE", "LOC_H", "LOC_L", "LOC_STAGING"]

# Tier a selection policy gives a planned sample.
TIER_NONE, TIER_H, TIER_L = 0, 1, 2
# Where the cache directory expects a sample's bytes to be.
LOC_SOURCE, LOC_H, LOC_L, LOC_STAGING = 0, 1, 2, 3
