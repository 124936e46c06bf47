"""Annotation and Reads: what :meth:`CacheDirectory.annotate` returns, and their builder.

Both are plain holders of numpy arrays (picklable, no per-sample objects). The field
names match ``impact_loader.plan.BatchPlan`` so the wiring layer can build a plan with
``BatchPlan(a.indices, tier=a.tier, location=a.location, slot=a.slot,
generation=a.generation, planned=a.planned)``. :class:`BatchBuilder` holds the working
arrays of one ``annotate`` call while the directory fills them in.
"""

from __future__ import annotations

import numpy as np

from .codes import LOC_SOURCE

__all__ = ["Annotation", "BatchBuilder", "Reads"]


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
        hit: bool, the bytes were already cached (or pending from an earlier batch's
            read) when the batch was annotated; substitutions count as hits.
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


class BatchBuilder:
    """Working arrays of one ``annotate`` call (plan order), then the Annotation.

    Args:
        idx / tier / imp: the checked plan arrays of the batch.
        seq: its batch sequence number.
        slot: int64 slot of each item at the start (-1: miss); updated in place.
    """

    __slots__ = ("idx", "tier", "imp", "seq", "slot", "delivered", "hit", "sub", "_runs")

    def __init__(self, idx, tier, imp, seq: int, slot) -> None:
        self.idx, self.tier, self.imp, self.seq, self.slot = idx, tier, imp, seq, slot
        self.delivered = idx  # copied on the first substitution (see substitute())
        self.hit = slot >= 0
        self.sub = np.zeros(len(idx), bool)
        self._runs = []

    def substitute(self, positions, delivered) -> None:
        """Deliver ``delivered`` (real indices of substitutes) at ``positions``."""
        if self.delivered is self.idx:
            self.delivered = self.idx.copy()
        self.delivered[positions] = delivered
        self.hit[positions] = True
        self.sub[positions] = True

    def add_reads(self, pos, start, stop, location: int) -> None:
        """Storage reads ``[start[i], stop[i])`` first needed at plan position ``pos[i]``."""
        loc = np.empty(len(pos), np.int8)
        loc.fill(location)
        self._runs.append((pos, start, stop, loc))

    def reads(self) -> Reads:
        """The reads, in plan order of first need."""
        if not self._runs:
            return Reads(np.empty(0, np.int64), np.empty(0, np.int64), np.empty(0, np.int8))
        if len(self._runs) == 1:  # one group, already in plan order
            _, start, stop, loc = self._runs[0]
            return Reads(start, stop, loc)
        pos, start, stop, loc = (np.concatenate(c) for c in zip(*self._runs))
        order = pos.argsort(kind="stable")
        return Reads(start[order], stop[order], loc[order])

    def annotation(self, store) -> Annotation:
        """The finished :class:`Annotation` (generations and pools from ``store``)."""
        n, slot = len(self.idx), self.slot
        gen = np.empty(n, np.int64)
        gen.fill(-1)
        loc = np.empty(n, np.int8)
        loc.fill(LOC_SOURCE)
        has = slot >= 0
        if np.count_nonzero(has):
            s = slot[has]
            gen[has] = store.generations(s)
            loc[has] = store._pool[s]
        return Annotation(planned=self.idx, indices=self.delivered, tier=self.tier,
                          location=loc, slot=slot, generation=gen, hit=self.hit,
                          substituted=self.sub, reads=self.reads(), seq=self.seq)
