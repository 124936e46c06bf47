"""The Source protocol: the only way impact-loader reads storage.

Anything with ``__len__``, ``read_many(indices) -> list[bytes]`` and ``decode(raw)``
is a source, so users can bring their own storage. ``read_many`` returns the raw bytes
of each index in request order, may be called from several threads at once, and is the
only path to storage bytes (a wrapper around it sees every byte read). Neighbouring
indices are neighbours on storage, so contiguous runs are cheap to read.
"""

from __future__ import annotations

from typing import Any, Iterable, List, Sequence

try:  # Python >= 3.8
    from typing import Protocol, runtime_checkable
except ImportError:  # pragma: no cover
    from typing_extensions import Protocol, runtime_checkable  # type: ignore

import numpy as np

__all__ = ["Source", "check_indices", "contiguous_runs"]


@runtime_checkable
class Source(Protocol):
    """Structural type of a sample store (see module docstring)."""

    def __len__(self) -> int: ...

    def read_many(self, indices: Sequence[int]) -> List[bytes]: ...

    def decode(self, raw: Any) -> Any: ...


def check_indices(indices: Iterable[int], length: int, where: str) -> np.ndarray:
    """Return ``indices`` as an int64 array, raising ``IndexError`` for any out of range.

    Args:
        indices: sample indices (any integer iterable or array).
        length: number of samples in the source.
        where: name of the source, for the message.

    Raises:
        IndexError: an index is negative or >= ``length``; the message names it.
        TypeError: the indices are not integers.
    """
    arr = np.asarray(indices if not isinstance(indices, range) else np.arange(
        indices.start, indices.stop, indices.step))
    if arr.size == 0:
        return arr.astype(np.int64).reshape(-1)
    if arr.dtype.kind not in "iu":
        raise TypeError(f"{where}: indices must be integers, got dtype {arr.dtype}")
    arr = arr.astype(np.int64, copy=False).reshape(-1)
    bad = (arr < 0) | (arr >= length)
    if bad.any():
        first = int(arr[np.argmax(bad)])
        raise IndexError(
            f"{where}: index {first} is out of range for {length} samples "
            f"(valid: 0..{length - 1}; negative indices are not accepted)")
    return arr


def contiguous_runs(indices: np.ndarray) -> List[tuple]:
    """Split sorted unique indices into ``(start, stop)`` runs of consecutive values."""
    if len(indices) == 0:
        return []
    breaks = np.flatnonzero(np.diff(indices) != 1) + 1
    starts = np.concatenate(([0], breaks))
    stops = np.concatenate((breaks, [len(indices)]))
    return [(int(indices[a]), int(indices[b - 1]) + 1) for a, b in zip(starts, stops)]
