"""impact_loader.cache: the node's shared sample cache (pure numpy + stdlib).

Public names:

* :class:`CacheConfig` -- every knob, validated in one place.
* :class:`CacheDirectory` -- main process: annotate plans, decide admissions and
  substitutions, place bytes (``fill``), report consumed batches (``release``).
* :class:`SharedStore` -- the shared memory region (owner side); pickled it arrives in
  workers as a :class:`StoreReader`, whose ``read(slot, generation)`` they call.
* :data:`POLICIES` -- the name table of cache policies (``none``, ``lru``, ``minio``,
  ``importance``); :class:`CachePolicy` is their interface.
* ``TIER_*`` / ``LOC_*`` codes (same values as ``impact_loader.plan``).

See ``directory.py`` for the protocol between sampler, prefetcher and workers.
"""

from .annotation import Annotation, Reads
from .base import CachePolicy
from .codes import (LOC_H, LOC_L, LOC_SOURCE, LOC_STAGING, TIER_H, TIER_L,
                    TIER_NONE)
from .config import CacheConfig
from .directory import CacheDirectory
from .registry import POLICIES, make_policy
from .reader import StoreReader
from .store import SharedStore

__all__ = ["Annotation", "CacheConfig", "CacheDirectory", "CachePolicy", "POLICIES",
           "Reads", "SharedStore", "StoreReader", "make_policy", "LOC_H", "LOC_L", "LOC_SOURCE",
           "LOC_STAGING", "TIER_H", "TIER_L", "TIER_NONE"]
