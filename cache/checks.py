"""Validation of plan arrays handed to the cache directory (one place, clear errors)."""

from __future__ import annotations

import numpy as np

from .codes import TIER_L, TIER_NONE

__all__ = ["check_plan", "check_updates", "fill_indices"]


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
    if n and (idx.min() < 0 or idx.max() >= n_samples):
        bad = int(idx[(idx < 0) | (idx >= n_samples)][0])
        raise ValueError(f"index {bad} is outside 0..{n_samples - 1} "
                         f"(n_samples={n_samples}); pass dataset indices")
    if n and (t.min() < TIER_NONE or t.max() > TIER_L):
        raise ValueError(f"tier values must be 0 (TIER_NONE), 1 (TIER_H) or "
                         f"2 (TIER_L); got {sorted(set(t.tolist()))}")
    if np.isnan(w).any():
        raise ValueError("importance contains NaN; pass finite numbers")
    return idx, t.astype(np.int8, copy=False), w


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
    if len(idx) and (idx.min() < 0 or idx.max() >= n_samples):
        raise ValueError(f"an index is outside 0..{n_samples - 1}")
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
    if len(idx) and (idx.min() < 0 or idx.max() >= n_samples):
        bad = int(idx[(idx < 0) | (idx >= n_samples)][0])
        raise ValueError(f"index {bad} is out of range for n_samples={n_samples}; "
                         f"pass indices from the annotation")
    return idx
