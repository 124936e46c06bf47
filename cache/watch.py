"""PendingWatch: reservations the directory re-checks once their batch is consumed.

Every slot the directory reserves (an admission awaiting its bytes, or a staged miss)
is watched under the sequence number of the batch that reserved it. When that batch is
released, the slot is due: a reservation whose bytes never came is abandoned, and a
staged entry is dropped -- unless a later batch touched it since, in which case it is
watched again under that batch's number. Slots are kept as one numpy array per batch
in a heap keyed by sequence number (no per-slot Python object).
"""

from __future__ import annotations

import heapq
import itertools
from typing import List, Tuple

import numpy as np

__all__ = ["PendingWatch"]


class PendingWatch:
    """Slots to re-check, keyed by the batch sequence number they wait for."""

    def __init__(self) -> None:
        self._heap: List[Tuple[int, int, np.ndarray]] = []
        self._tie = itertools.count()

    def __len__(self) -> int:
        return sum(len(s) for _, _, s in self._heap)

    def add(self, slots: np.ndarray, seq: int) -> None:
        """Watch ``slots`` until batch ``seq`` is consumed."""
        if len(slots):
            heapq.heappush(self._heap, (int(seq), next(self._tie), slots))

    def add_by_key(self, slots: np.ndarray, keys: np.ndarray) -> None:
        """Watch each ``slots[i]`` until batch ``keys[i]`` is consumed."""
        if not len(slots):
            return
        order = keys.argsort(kind="stable")
        slots, keys = slots[order], keys[order]
        cut = (keys[1:] != keys[:-1]).nonzero()[0] + 1
        for part, key in zip(np.split(slots, cut), keys[np.r_[0, cut]].tolist()):
            self.add(part, key)

    def due(self, seq: int) -> np.ndarray:
        """Remove and return every slot watched for a batch <= ``seq``."""
        out = []
        heap = self._heap
        while heap and heap[0][0] <= seq:
            out.append(heapq.heappop(heap)[2])
        if not out:
            return np.empty(0, np.int64)
        return np.concatenate(out) if len(out) > 1 else out[0]

    def clear(self) -> None:
        """Forget everything (nothing can be pending)."""
        self._heap.clear()
