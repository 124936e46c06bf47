"""Annotation and Reads: what :meth:`CacheDirectory.annotate` returns.

Both are plain holders of numpy arrays (picklable, no per-sample objects). The field
names match ``impact_loader.plan.BatchPlan`` so the wiring layer can build a plan with
``BatchPlan(a.indices, tier=a.tier, location=a.location, slot=a.slot,
generation=a.generation, planned=a.planned)``.
"""

from __future__ import annotations

import numpy as np

__all__ = ["Annotation", "Reads"]


class Reads:
    """Storage reads the prefetcher must issue, in plan order of first need.

    Attributes:
        start: int64 first index of each run.
        stop: int64 one past the last index of each run (``stop - start == 1`` for a
            single miss; longer runs are L-packages, to read with one ``read_many``).
        location: int8 pool the run goes to (``LOC_H``, ``LOC_L`` or ``LOC_STAGING``).
    """

    __slots__ = ("start", "stop", "location")

    def __init__(self, start, stop, location) -> None:
        self.start = np.asarray(start, np.int64)
        self.stop = np.asarray(stop, np.int64)
        self.location = np.asarray(location, np.int8)

    def __len__(self) -> int:
        return len(self.start)

    def __iter__(self):
        """Yield ``(start, stop)`` pairs."""
        return zip(self.start.tolist(), self.stop.tolist())

    @property
    def singles(self) -> np.ndarray:
        """Indices of the single-sample reads (random reads; batch them in one fill)."""
        return self.start[self.stop - self.start == 1]

    @property
    def packages(self):
        """``(start, stop)`` pairs of the multi-sample runs (sequential reads)."""
        many = self.stop - self.start > 1
        return list(zip(self.start[many].tolist(), self.stop[many].tolist()))

    @property
    def n_samples(self) -> int:
        """Total samples to read."""
        return int((self.stop - self.start).sum())

    def __repr__(self) -> str:
        return f"Reads(runs={len(self)}, samples={self.n_samples})"


class Annotation:
    """Per-item annotation of a planned batch (arrays of equal length).

    Attributes:
        planned: int64 indices as planned (before substitution).
        indices: int64 indices to deliver and report (after substitution).
        tier: int8 tier of each planned item (``TIER_*``).
        location: int8 where the bytes are expected (``LOC_*``); ``LOC_SOURCE`` means
            the worker reads the source.
        slot: int64 store slot (-1 with ``LOC_SOURCE``).
        generation: int64 generation the slot must carry (-1 with ``LOC_SOURCE``).
        hit: bool, the bytes were already cached (or pending from an earlier read)
            when planned; substitutions count as hits.
        substituted: bool, ``indices`` differs from ``planned`` by substitution.
        reads: the :class:`Reads` the prefetcher must issue for this annotation.
        seq: batch sequence number the annotation belongs to.
    """

    __slots__ = ("planned", "indices", "tier", "location", "slot", "generation",
                 "hit", "substituted", "reads", "seq")

    def __init__(self, **fields) -> None:
        for name in self.__slots__:
            setattr(self, name, fields[name])

    def __len__(self) -> int:
        return len(self.indices)

    def __repr__(self) -> str:
        return (f"Annotation(seq={self.seq}, n={len(self)}, hits={int(self.hit.sum())}, "
                f"substituted={int(self.substituted.sum())}, reads={self.reads!r})")
