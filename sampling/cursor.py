"""EpochCursor: where a resumable sampler stands (epoch, batch position, pass).

Rules it encodes (stdlib only):
- ``select(e)`` with a new epoch starts it at batch 0; with the current epoch it keeps
  a restored position and otherwise lets the epoch be replayed from its start.
- A pass that ran to its end marks the epoch completed; the next pass moves on to the
  next epoch (``needs_advance``). A new pass after a partial one restarts the epoch.
- ``restore`` sets a position that the next pass resumes from, once.
- Each pass gets a token; a generator from a superseded pass stops yielding.
"""

from __future__ import annotations

from typing import Optional, Tuple

__all__ = ["EpochCursor"]


class EpochCursor:
    """Epoch, position within it and pass bookkeeping of a resumable batch sampler.

    Attributes:
        epoch: current epoch. position: batches of the epoch yielded in this pass.
        completed: the current pass reached the end of the epoch.
    """

    __slots__ = ("epoch", "position", "completed", "_resume", "_token")

    def __init__(self) -> None:
        self.epoch = 0
        self.position = 0
        self.completed = False
        self._resume: Optional[int] = None
        self._token = 0

    def select(self, epoch: int) -> bool:
        """Make ``epoch`` current; returns True if the epoch changed."""
        if epoch == self.epoch:
            self.completed = False
            return False
        self.start(epoch)
        return True

    def start(self, epoch: int) -> None:
        """Start ``epoch`` from batch 0, forgetting any restored position."""
        self.epoch = int(epoch)
        self.position = 0
        self.completed = False
        self._resume = None

    @property
    def needs_advance(self) -> bool:
        """True when the next pass should start the next epoch."""
        return self._resume is None and self.completed

    def begin(self, num_batches: int) -> Tuple[int, int]:
        """Begin a pass over an epoch of ``num_batches``; returns ``(start, token)``."""
        start = 0 if self._resume is None else self._resume
        self._resume = None
        self.position = start
        self.completed = start >= num_batches
        self._token += 1
        return start, self._token

    def step(self, token: int, position: int, num_batches: int) -> bool:
        """Record that batch ``position`` is being yielded; False if ``token`` is stale."""
        if token != self._token:
            return False
        self.position = position + 1
        self.completed = self.position >= num_batches
        return True

    def saved_position(self) -> int:
        """Position to save: the restored one if no pass has started since."""
        return self.position if self._resume is None else self._resume

    def restore(self, epoch: int, position: int, completed: bool) -> None:
        """Restore a saved cursor; the next pass resumes at ``position``."""
        self.start(epoch)
        self.position = int(position)
        self.completed = bool(completed)
        self._resume = None if self.completed else self.position
