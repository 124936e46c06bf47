"""Validation of what the cache is handed: plans, fills, updates, store layouts.

One place for the checks, so every error names the value, the limit and the fix.
"""

from __future__ import annotations

import numpy as np

from .codes import TIER_L

__all__ = ["check_plan", "check_updates", "fill_indices", "store_layout"]


def check_plan(indices, tier, importance, seq, last_seq: int, n_samples: int):
    """Return ``(indices int64, tier int8, importance float64)`` arrays of one batch.

    Args:
        indices: planned sample indices (integers in ``0 .. n_samples-1``).
        tier: ``TIER_*`` per index, or None for all ``TIER_NONE``.
        importance: importance per index, or None for all 0.
        seq: batch sequence number; must be >= ``last_seq`` and < 2**31.
        last_seq: sequence number of the previous batch (-1 before the first).
        n_samples: dataset length.

    Raises:
        ValueError: naming the bad value, the limit and the fix.
    """
    if isinstance(seq, bool) or not isinstance(seq, (int, np.integer)) \
            or not last_seq <= seq < 1 << 31:
        raise ValueError(f"seq={seq!r} must be an int >= the previous seq {last_seq} "
                         f"and < 2**31; number batches 0, 1, 2, ... in plan order")
    idx = np.asarray(indices).ravel()
    if idx.size and idx.dtype.kind not in "iu":
        raise ValueError(f"indices must be integers, got dtype {idx.dtype}")
    idx = idx.astype(np.int64, copy=False)
    n = len(idx)
    t = np.zeros(n, np.int8) if tier is None else np.asarray(tier).ravel()
    w = np.zeros(n, np.float64) if importance is None else np.asarray(
        importance, np.float64).ravel()
    if len(t) != n or len(w) != n:
        raise ValueError(f"{n} indices but {len(t)} tiers and {len(w)} importance "
                         f"values; pass one of each per index")
    _check_range(idx, n_samples, "pass dataset indices")
    if tier is None:
        bad = 0
    elif t.dtype == np.int8:  # negative tiers read as >= 128: one comparison
        bad = np.count_nonzero(t.view(np.uint8) > TIER_L)
    else:
        bad = np.count_nonzero((t < 0) | (t > TIER_L))
        t = t.astype(np.int8)
    if bad:
        raise ValueError(f"tier values must be 0 (TIER_NONE), 1 (TIER_H) or "
                         f"2 (TIER_L); got {sorted(set(np.asarray(tier).ravel().tolist()))}")
    if importance is not None and np.count_nonzero(w != w):
        raise ValueError("importance contains NaN; pass finite numbers")
    return idx, t, w


def check_updates(indices, importance, n_samples: int):
    """Return ``(indices int64, importance float64)`` of an importance update.

    Raises:
        ValueError: lengths differ or an index is outside ``0 .. n_samples-1``.
    """
    idx = np.asarray(indices, np.int64).ravel()
    imp = np.asarray(importance, np.float64).ravel()
    if len(idx) != len(imp):
        raise ValueError(f"{len(idx)} indices but {len(imp)} importance values; "
                         f"pass one value per index")
    _check_range(idx, n_samples, "pass dataset indices")
    return idx, imp


def fill_indices(indices, n_records: int, n_samples: int) -> np.ndarray:
    """int64 indices of a ``fill`` call with ``n_records`` records.

    Raises:
        ValueError: the counts differ or an index is out of range.
    """
    if isinstance(indices, range):
        idx = np.arange(indices.start, indices.stop, indices.step, dtype=np.int64)
    else:
        idx = np.asarray(indices, np.int64).ravel()
    if len(idx) != n_records:
        raise ValueError(f"fill got {len(idx)} indices but {n_records} records; "
                         f"pass one record per index")
    _check_range(idx, n_samples, "pass indices from the annotation")
    return idx


def store_layout(pools, block_bytes, max_entries):
    """Validate a store's arguments; return ``(ranges, n_blocks, max_entries)``.

    ``ranges`` maps each pool id to ``(first block, block count)``; ``max_entries``
    defaults to one slot per block.

    Raises:
        ValueError: naming the bad value, the limit and the fix.
    """
    if isinstance(block_bytes, bool) or not isinstance(block_bytes, int) \
            or block_bytes < 64:
        raise ValueError(f"block_bytes={block_bytes!r} must be an int >= 64; "
                         f"use e.g. 4096")
    ranges, first = {}, 0
    for pool, nbytes in pools:
        if isinstance(nbytes, bool) or not isinstance(nbytes, int) or nbytes < 0:
            raise ValueError(f"pool {pool} size={nbytes!r} bytes must be an int "
                             f">= 0; pass 0 for an empty pool")
        if pool in ranges:
            raise ValueError(f"pool id {pool} given twice; pool ids must be unique")
        if not 0 <= pool < 8:
            raise ValueError(f"pool id {pool} must be in 0..7 (a LOC_* code)")
        ranges[pool] = (first, nbytes // block_bytes)
        first += nbytes // block_bytes
    if first >= 1 << 31:
        raise ValueError(f"{first} blocks exceed 2**31; raise block_bytes")
    if max_entries is None:
        max_entries = max(first, 1)
    if isinstance(max_entries, bool) or not isinstance(max_entries, int) \
            or not 1 <= max_entries < 1 << 31:
        raise ValueError(f"max_entries={max_entries!r} must be an int >= 1 (and "
                         f"< 2**31); or pass None for one slot per block")
    return ranges, first, max_entries


def _check_range(idx: np.ndarray, n: int, fix: str) -> None:
    """Raise ValueError naming the first int64 index outside ``0 .. n-1``.

    One comparison on the fast path: negatives wrap to huge values as uint64.
    """
    if np.count_nonzero(idx.view(np.uint64) >= n):
        bad = int(idx[(idx < 0) | (idx >= n)][0])
        raise ValueError(f"index {bad} is outside 0..{n - 1} (n_samples={n}); {fix}")
