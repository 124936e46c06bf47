"""CacheConfig: every cache knob in one frozen dataclass, validated in one place.

Byte budgets:
    The shared data region is exactly ``cache_bytes + staging_bytes`` bytes. The
    ``importance`` policy splits ``cache_bytes`` into an H part
    (``round(h_fraction * cache_bytes)``) and an L part (the rest); the baselines use
    all of ``cache_bytes`` as one pool. Each part is carved into ``block_bytes`` blocks;
    the remainder of a part smaller than one block is left unused.
    ``staging_bytes`` (default 0: no staging) holds prefetched misses that are not
    admitted, until the batch that uses them is consumed.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

__all__ = ["CacheConfig", "DEFAULT_PACKAGE_SIZE", "DEFAULT_H_FRACTION",
           "DEFAULT_BLOCK_BYTES"]

DEFAULT_PACKAGE_SIZE = 64        # samples per L-package
DEFAULT_H_FRACTION = 0.5         # share of cache_bytes for the H-cache
DEFAULT_BLOCK_BYTES = 4096       # allocation unit of the store


@dataclass(frozen=True)
class CacheConfig:
    """Configuration of the node's sample cache (all arguments keyword-only).

    Args:
        cache_bytes: bytes of raw encoded samples the cache may hold (>= 0; 0 disables
            caching).
        policy: cache policy name: ``"none"``, ``"lru"``, ``"minio"`` or
            ``"importance"`` (the H/L design, default).
        h_fraction: share of ``cache_bytes`` given to the H-cache by the
            ``importance`` policy, in [0, 1] (default 0.5); the rest is the L-cache.
        package_size: samples per L-package, a contiguous index run read with one
            ``read_many`` call (default 64).
        substitution: answer L-cache misses with a cached, not yet used L-sample
            (default True). False gives exactly-once semantics.
        staging_bytes: extra bytes for prefetched misses that are not admitted
            (default 0: such misses are read by the workers from the source).
        block_bytes: allocation unit in bytes (default 4096); a record occupies
            ``ceil(len / block_bytes)`` blocks.
        max_entries: most entry slots in use at once (default: one per block, which
            can never run out). Slot metadata is not allocated up front: it grows
            with the entries in use (12 shared bytes per slot, backed only once
            used, plus about 30 owner-side bytes for ``lru``, 26 for ``minio`` and
            46 for ``importance``, whose heaps add 16 per H entry), and nothing is
            kept per block; so records spanning several blocks stay under 64 bytes
            per cached entry. Pass a smaller value only to cap the entry count.
    """

    cache_bytes: int = 0
    policy: str = "importance"
    h_fraction: float = DEFAULT_H_FRACTION
    package_size: int = DEFAULT_PACKAGE_SIZE
    substitution: bool = True
    staging_bytes: int = 0
    block_bytes: int = DEFAULT_BLOCK_BYTES
    max_entries: Optional[int] = None

    def __init__(self, *, cache_bytes: int = 0, policy: str = "importance",
                 h_fraction: float = DEFAULT_H_FRACTION,
                 package_size: int = DEFAULT_PACKAGE_SIZE, substitution: bool = True,
                 staging_bytes: int = 0, block_bytes: int = DEFAULT_BLOCK_BYTES,
                 max_entries: Optional[int] = None) -> None:
        for name, value in (("cache_bytes", cache_bytes), ("policy", policy),
                            ("h_fraction", h_fraction), ("package_size", package_size),
                            ("substitution", substitution),
                            ("staging_bytes", staging_bytes),
                            ("block_bytes", block_bytes), ("max_entries", max_entries)):
            object.__setattr__(self, name, value)
        self._validate()

    def _validate(self) -> None:
        from .registry import POLICIES  # the name table; imported here to avoid a cycle
        _int("cache_bytes", self.cache_bytes, 0, "pass 0 to disable the cache")
        _int("staging_bytes", self.staging_bytes, 0, "pass 0 for no staging area")
        _int("block_bytes", self.block_bytes, 64, "use e.g. 4096 (the default)")
        _int("package_size", self.package_size, 1, "use e.g. 64 (the default)")
        if self.policy not in POLICIES:
            raise ValueError(f"policy={self.policy!r} is not a cache policy; choose one "
                             f"of {sorted(POLICIES)}")
        if isinstance(self.h_fraction, bool) or not isinstance(
                self.h_fraction, (int, float)) or not 0.0 <= self.h_fraction <= 1.0:
            raise ValueError(f"h_fraction={self.h_fraction!r} must be a number in "
                             f"[0, 1]; e.g. 0.5 gives half of cache_bytes to the H-cache")
        if not isinstance(self.substitution, bool):
            raise ValueError(f"substitution={self.substitution!r} must be True or False")
        for name, part in (("cache_bytes", self.cache_bytes),
                           ("staging_bytes", self.staging_bytes)):
            if 0 < part < self.block_bytes:
                raise ValueError(
                    f"{name}={part} is smaller than one block (block_bytes="
                    f"{self.block_bytes}); raise {name}, lower block_bytes, or pass 0")
        if self.max_entries is not None:
            _int("max_entries", self.max_entries, 1, "or pass None for one per block")

    @property
    def h_bytes(self) -> int:
        """Bytes of the H part of ``cache_bytes`` (``importance`` policy only)."""
        return int(round(self.h_fraction * self.cache_bytes))

    @property
    def l_bytes(self) -> int:
        """Bytes of the L part of ``cache_bytes`` (``importance`` policy only)."""
        return self.cache_bytes - self.h_bytes

    @property
    def region_bytes(self) -> int:
        """Exact size in bytes of the shared data region."""
        return self.cache_bytes + self.staging_bytes


def _int(name: str, value: object, low: int, fix: str) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"{name}={value!r} must be an int >= {low}; {fix}")
    if value < low:
        raise ValueError(f"{name}={value} must be >= {low}; {fix}")
