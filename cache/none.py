"""Policy ``none``: caches nothing; every sample is read from the source."""

from __future__ import annotations

from typing import List, Tuple

from .base import CachePolicy

__all__ = ["NoCache"]


class NoCache(CachePolicy):
    """No caching (the baseline every other policy is compared with)."""

    name = "none"

    def pools(self) -> List[Tuple[int, int]]:
        return []
