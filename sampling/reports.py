"""ReportRouter: how validated loss reports reach the importance table.

In a single process a report is applied at once. When several ranks must keep identical
tables, reports are held until the next merge, where every rank's held reports are
gathered (by a function passed in, e.g. ``distributed.all_gather_reports``) and applied,
in rank order, on every rank. Also counts ``update`` calls for ``sync_every``.
"""

from __future__ import annotations

from typing import Callable, List, Optional, Tuple

import numpy as np

from .stats import SamplerStats
from .table import ImportanceTable

__all__ = ["ReportRouter"]

Gather = Callable[[np.ndarray, np.ndarray], Tuple[np.ndarray, np.ndarray]]


class ReportRouter:
    """Applies or holds reports for one table.

    Args:
        table: the table reports go to.
        stats: counters to record updates and merges in.
        nonfinite: ``"raise"`` or ``"skip"`` (see ``SamplingConfig``).
    """

    def __init__(self, table: ImportanceTable, stats: SamplerStats, nonfinite: str) -> None:
        self.table = table
        self.stats = stats
        self.nonfinite = nonfinite
        self.calls_since_merge = 0
        self._held: List[Tuple[np.ndarray, np.ndarray]] = []

    def report(self, indices, losses, *, epoch: int, hold: bool) -> None:
        """Validate one report; apply it now, or hold it for the next merge if ``hold``.

        Raises:
            TypeError, ValueError, IndexError: see ``ImportanceTable.check``.
        """
        idx, loss, skipped = self.table.check(indices, losses, nonfinite=self.nonfinite)
        self.stats.record_update(idx.size, skipped)
        if hold:
            self._held.append((idx.copy(), loss.copy()))
        else:
            self.table.apply(idx, loss, epoch)

    def merge(self, *, epoch: int, gather: Optional[Gather]) -> None:
        """Apply the held reports of every rank (``gather`` them first when given)."""
        self.calls_since_merge = 0
        idx, loss = self.held()
        self._held = []
        if gather is not None:
            idx, loss = gather(idx, loss)
            self.stats.record_sync()
        self.table.apply(idx, loss, epoch)

    def held(self) -> Tuple[np.ndarray, np.ndarray]:
        """All held reports as ``(indices int64, losses float64)``, in arrival order."""
        if not self._held:
            return np.zeros(0, np.int64), np.zeros(0, np.float64)
        return (np.concatenate([h[0] for h in self._held]),
                np.concatenate([h[1] for h in self._held]))

    @property
    def num_held(self) -> int:
        """Number of losses held for the next merge."""
        return sum(h[0].size for h in self._held)

    def restore(self, indices, losses) -> None:
        """Replace the held reports (from a saved state)."""
        idx = np.array(indices, dtype=np.int64)
        self._held = [(idx, np.array(losses, dtype=np.float64))] if idx.size else []
