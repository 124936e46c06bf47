"""Policy ``minio`` (CoorDL, VLDB 2021): admit until full, never evict.

Under uniform random epochs every item is equally likely, so a static cache of fraction
``c`` of the dataset hits exactly ``c`` of the requests, and never thrashes.
"""

from __future__ import annotations

import numpy as np

from .base import CachePolicy
from .codes import LOC_H

__all__ = ["MinIOCache"]


class MinIOCache(CachePolicy):
    """Admit every missed sample while the single pool has room; evict nothing."""

    name = "minio"

    def route(self, tier: np.ndarray) -> int:
        return LOC_H
