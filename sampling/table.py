"""ImportanceTable: per-sample importance as a few flat numpy arrays (O(N), no objects).

For N samples it holds the running score (EMA of reported losses, float64) and the epoch
each sample was last scored (int32, -1 = never: its staleness, and whether it was ever
scored), plus a ring buffer of the most recent reported losses (``selective`` ranks
against it). 12 bytes per sample, plus the 4 of ``importance()``'s shared float32
array while someone holds it.
"""

from __future__ import annotations

from typing import Any, Dict, Optional, Tuple

import numpy as np

__all__ = ["ImportanceTable"]


class ImportanceTable:
    """Importance scores of ``n`` samples.

    ``update`` validates and applies; ``check`` and ``apply`` are the two halves, so a
    distributed sampler can validate locally and apply the merged updates of every rank.

    Change ``score`` and ``last_epoch`` only through ``update``, ``apply`` or
    ``load_state_dict``: ``importance()`` keeps its array until one of them runs.

    Duplicate rule: when one call names a sample several times, its losses are averaged
    and the EMA takes one step with the mean (order-independent, hence deterministic).

    Args:
        n: number of samples, >= 1.
        ema_weight: weight of the newest loss, in (0, 1] (see ``SamplingConfig``).
        prior: score of never-scored samples; None = mean of the scored ones (1.0 if none).
        window: length of the recent-loss ring buffer, >= 1.

    Raises:
        ValueError: ``n`` < 1 or ``window`` < 1.
    """

    def __init__(self, n: int, *, ema_weight: float = 0.5, prior: Optional[float] = None,
                 window: int = 1024) -> None:
        if int(n) < 1:
            raise ValueError(f"an importance table needs n >= 1 samples, got n={n}")
        if int(window) < 1:
            raise ValueError(f"window={window} must be >= 1")
        self.n = int(n)
        self.ema_weight = float(ema_weight)
        self.prior = prior
        self.score = np.zeros(self.n, dtype=np.float64)
        self.last_epoch = np.full(self.n, -1, dtype=np.int32)
        self._window = np.zeros(int(window), dtype=np.float64)
        self._wpos = 0
        self._wfill = 0
        self._version = 0  # bumped by every change of score / last_epoch
        self._importance: Optional[Tuple[int, np.ndarray]] = None  # (version, array)

    # ------------------------------------------------------------------ updates
    def check(self, indices: Any, losses: Any, *, nonfinite: str = "raise"
              ) -> Tuple[np.ndarray, np.ndarray, int]:
        """Validate one report of per-sample losses.

        Args:
            indices: integer sample indices (any shape; flattened), each in [0, n).
            losses: one loss per index (real numbers >= 0; flattened).
            nonfinite: ``"raise"`` or ``"skip"`` for NaN / infinite losses.

        Returns:
            ``(indices int64, losses float64, skipped)``; arrays may be views of the input.

        Raises:
            TypeError: indices are not integers or losses not real numbers.
            ValueError: lengths differ, a loss is negative, or a loss is NaN/inf while
                ``nonfinite="raise"``; the message names the offending indices.
            IndexError: an index is out of range; the message names it.
        """
        loss = np.asarray(losses).reshape(-1)
        if loss.dtype.kind not in "fiu":
            raise TypeError(f"losses must be real numbers, got dtype {loss.dtype}")
        n_idx = np.size(indices)
        if n_idx != loss.size:
            raise ValueError(
                f"got {loss.size} losses for {n_idx} indices; pass one loss per sample "
                "(e.g. cross_entropy(..., reduction='none')), not the batch mean")
        idx = self.check_indices(indices)
        loss = loss.astype(np.float64, copy=False)
        if idx.size == 0:
            return idx, loss, 0
        skipped = 0
        lo, hi = loss.min(), loss.max()  # NaN propagates into both
        if lo >= 0 and hi < np.inf:
            return idx, loss, 0
        finite = np.isfinite(loss)
        if not finite.all():
            if nonfinite != "skip":
                raise ValueError(
                    f"non-finite losses {_few(loss[~finite])} for sample indices "
                    f"{_few(idx[~finite])}; fix the loss, or pass nonfinite='skip' to drop "
                    "such losses (they are counted in stats()['nonfinite'])")
            skipped = int((~finite).sum())
            idx, loss = idx[finite], loss[finite]
        if loss.size and loss.min() < 0:
            bad = loss < 0
            raise ValueError(
                f"losses must be >= 0 (importance is proportional to the loss), got "
                f"{_few(loss[bad])} for sample indices {_few(idx[bad])}; report a "
                "non-negative per-sample loss")
        return idx, loss, skipped

    def check_indices(self, indices: Any) -> np.ndarray:
        """Validate sample indices (any shape; flattened); returns them as int64.

        Raises:
            TypeError: indices are not integers.
            IndexError: an index is out of range; the message names it.
        """
        idx = np.asarray(indices).reshape(-1)
        if idx.dtype.kind not in "iu":
            raise TypeError(f"indices must be integers, got dtype {idx.dtype}; pass the "
                            "int64 sample indices the loader delivered with the batch")
        wide = idx.astype(np.int64, copy=False)
        # One reduction checks both ends: negative int64 values are huge as uint64.
        if wide.size and wide.view(np.uint64).max() >= self.n:
            bad = idx[(idx < 0) | (idx >= self.n)]
            raise IndexError(f"sample indices {_few(bad)} are out of range [0, {self.n}); "
                             "report the indices the loader delivered")
        return wide

    def apply(self, indices: np.ndarray, losses: np.ndarray, epoch: int) -> None:
        """Apply already validated losses (see ``check``) scored in ``epoch``."""
        if indices.size == 0:
            return
        self._push_window(losses)
        if indices.size > 1:
            order = np.sort(indices)
            if (order[1:] == order[:-1]).any():
                indices, inv = np.unique(indices, return_inverse=True)
                losses = (np.bincount(inv, weights=losses, minlength=indices.size)
                          / np.bincount(inv, minlength=indices.size))
        seen = self.last_epoch[indices] >= 0
        old = self.score[indices]
        self.score[indices] = np.where(seen, old + self.ema_weight * (losses - old), losses)
        self.last_epoch[indices] = epoch
        self._changed()

    def _changed(self) -> None:
        self._version += 1
        self._importance = None  # a stale array is not kept alive by the table

    def update(self, indices: Any, losses: Any, *, epoch: int,
               nonfinite: str = "raise") -> int:
        """Validate and apply one report; returns how many non-finite losses were skipped.

        Raises:
            TypeError, ValueError, IndexError: see ``check``.
        """
        idx, loss, skipped = self.check(indices, losses, nonfinite=nonfinite)
        self.apply(idx, loss, epoch)
        return skipped

    def _push_window(self, losses: np.ndarray) -> None:
        w = self._window.size
        k = losses.size
        if k >= w:
            self._window[:] = losses[k - w:]
            self._wpos, self._wfill = 0, w
            return
        end = self._wpos + k
        if end <= w:
            self._window[self._wpos:end] = losses
        else:
            cut = w - self._wpos
            self._window[self._wpos:] = losses[:cut]
            self._window[:k - cut] = losses[cut:]
        self._wpos = end % w
        self._wfill = min(w, self._wfill + k)

    # ------------------------------------------------------------------ queries
    @property
    def scored(self) -> np.ndarray:
        """Bool per sample: scored at least once (a fresh array)."""
        return self.last_epoch >= 0

    def prior_value(self) -> float:
        """Score used for never-scored samples (configured, or mean of scored ones)."""
        if self.prior is not None:
            return float(self.prior)
        return self._prior(self.scored)

    def _prior(self, scored: np.ndarray) -> float:
        if self.prior is not None:
            return float(self.prior)
        count = int(np.count_nonzero(scored))
        if count == 0:
            return 1.0
        # Never-scored samples keep a score of exactly 0, so the plain sum is theirs.
        return float(self.score.sum() / count)

    def importance(self) -> np.ndarray:
        """Score of every sample (float32, length n), the prior where never scored.

        For holders: the cache layer keeps it for a whole epoch (its heap keys are
        float32 already). Read-only and shared: one array is built and returned again
        until the table changes, so the epoch's holders share it. Copy it to modify it.
        Planning ranks with ``importance_exact``.
        """
        cached = self._importance
        version = self._version
        if cached is not None and cached[0] == version:
            return cached[1]
        imp = self.importance_exact().astype(np.float32)
        imp.flags.writeable = False
        if version == self._version:  # not changed meanwhile (another thread may ask)
            self._importance = (version, imp)
        return imp

    def importance_exact(self) -> np.ndarray:
        """``importance()`` in float64, a fresh array (what the policies plan with)."""
        scored = self.scored
        return np.where(scored, self.score, self._prior(scored))

    def staleness(self, epoch: int) -> np.ndarray:
        """Epochs since each sample was last scored (``epoch + 1`` if never), int64."""
        return int(epoch) - self.last_epoch.astype(np.int64)

    def ranks(self) -> np.ndarray:
        """Rank of each sample by importance, 0 = least important (ties by index)."""
        order = np.argsort(self.importance_exact(), kind="stable")
        ranks = np.empty(self.n, dtype=np.int64)
        ranks[order] = np.arange(self.n)
        return ranks

    def percentiles(self) -> np.ndarray:
        """Importance percentile of each sample in [0, 1] (1 = most important)."""
        return self.ranks() / max(self.n - 1, 1)

    def recent_losses(self) -> np.ndarray:
        """Copy of the most recent reported losses (up to ``window`` of them)."""
        return self._window[:self._wfill].copy()

    @property
    def num_scored(self) -> int:
        """Number of samples scored at least once."""
        return int(np.count_nonzero(self.scored))

    # ------------------------------------------------------------------ state
    def state_dict(self) -> Dict[str, Any]:
        """The table's state under named keys.

        Like ``torch.nn.Module.state_dict``, the arrays are the live ones (no copy), so
        a saved state always holds every loss reported before it is serialised; use
        ``copy.deepcopy`` to freeze it in memory.
        """
        return {"n": self.n, "score": self.score, "last_epoch": self.last_epoch, "window": self._window,
                "window_pos": self._wpos, "window_fill": self._wfill}

    def load_state_dict(self, state: Dict[str, Any]) -> None:
        """Restore a ``state_dict`` (copies its arrays).

        Raises:
            ValueError: the state describes a different number of samples or window.
        """
        if int(state["n"]) != self.n:
            raise ValueError(f"state_dict describes {state['n']} samples but this table has "
                             f"{self.n}; load it into a sampler over the same data set")
        if len(state["window"]) != self._window.size:
            raise ValueError(f"state_dict has a loss window of {len(state['window'])}, this "
                             f"table {self._window.size}; use the same window= setting")
        self.score = np.array(state["score"], dtype=np.float64)
        self.last_epoch = np.array(state["last_epoch"], dtype=np.int32)
        self._window = np.array(state["window"], dtype=np.float64)
        self._wpos = int(state["window_pos"])
        self._wfill = int(state["window_fill"])
        self._changed()


def _few(values: np.ndarray, limit: int = 8) -> str:
    shown = ", ".join(str(v) for v in values[:limit].tolist())
    more = f", ... ({values.size} in all)" if values.size > limit else ""
    return f"[{shown}{more}]"
