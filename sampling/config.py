"""SamplingConfig: every knob of the importance table and the selection policies.

All values are checked in one place (``SamplingConfig.__post_init__``); every error names
the value, the allowed range and how to fix it.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from numbers import Integral, Real
from typing import Any, Dict, Optional

__all__ = ["SamplingConfig", "NONFINITE_MODES"]

NONFINITE_MODES = ("raise", "skip")


@dataclass(frozen=True)
class SamplingConfig:
    """Configuration of the importance table and the selection policies.

    Defaults come from the papers the policies implement; each is justified below.

    Attributes:
        ema_weight: weight of the newest loss in a sample's running score,
            ``score = ema_weight * loss + (1 - ema_weight) * score`` (the first loss a
            sample gets is taken as is). In (0, 1]. Default 0.5: a sample is scored about
            once per epoch, so 0.5 halves the influence of a score every epoch. Losses
            fall fast early in training, and a longer memory would keep last epoch's hard
            samples marked important for several epochs (ImPACT and iCache use the latest
            epoch's loss, i.e. 1.0; 0.5 trades a little lag for less noise).
        prior: score given to a sample that has never been scored. ``None`` (default)
            uses the mean score of the scored samples (1.0 while none is scored), so an
            unseen sample is neither favoured nor starved. Otherwise a finite value >= 0.
        warmup_epochs: epochs at the start of training that visit the full data set
            under ``impact`` (losses are uninformative until the model has seen the data).
            >= 0. Default 2: every sample is scored twice (the EMA then rests on two
            losses) before selection starts. ImPACT / iCache warm up for 5 epochs of
            90+-epoch ImageNet runs; with shorter training the full-data warm-up would
            be a large part of the job at full I/O cost. On impact-loader's accuracy
            benchmark (``impact-bench accuracy``: digits and the noisy synthetic task,
            mean of 3 seeds) impact stayed within 1 point of uniform training with 2, 3
            and 5 warm-up epochs (16 epochs: -0.74/-0.13 points with 2, -0.52/-0.13
            with 5; 20 epochs on 10,000 synthetic samples: -0.07/-0.37 with 2), while 1
            came to -0.95 on the noisy task. Pass 5 to follow the papers.
        trained_fraction: share of the data set that ``impact`` trains on in a
            selection epoch, in (0, 1]: the samples chosen by importance *and* the
            re-evaluated ones (``reeval_share``) together. Default 0.5: ImPACT reports
            negligible accuracy loss when training on about half of the samples per
            epoch.
        h_share: share of an epoch's planned samples, by descending importance, marked
            H-tier (the rest are L-tier), in [0, 1]. Default 0.7, the H-cache share of
            ImPACT / iCache.
        reeval_share: share of the samples *not* selected by importance that ``impact``
            adds back to a selection epoch, most stale score first, so a sample whose loss
            grows is rescored and can come back. In [0, 1]. Default 0.25: every unselected
            sample is rescored within about four epochs.
        refresh_every: under ``impact``, every ``refresh_every``-th epoch after warm-up
            visits the full data set (a refresh epoch) so every score is renewed. >= 0;
            0 disables refresh epochs. Default 5, which bounds the age of any score to
            five epochs.
        beta: selectivity of ``selective``: a sample is kept with probability
            ``percentile(loss) ** beta``. > 0. Default 0.33, which keeps 1 / (1 + beta),
            about 75%, of the samples when losses are spread evenly; Selective Backprop
            uses beta in {1, 2, 3} (50% down to 25% kept) for stronger selection.
        window: number of most recent reported losses that ``selective`` ranks a sample's
            score against (the percentile's reference), >= 1. Default 1024: Selective
            Backprop also ranks against a bounded history of recent losses; 1024 gives a
            percentile accurate to about 1.5 points yet follows the falling loss within a
            few hundred steps.
        smoothing: floor that keeps every sample reachable. ``importance`` and ``impact``
            mix this share of probability mass uniformly into ``p ∝ score``
            (``p = (1 - smoothing) * score / sum + smoothing / N``), which also bounds the
            unbiasing weight ``1 / (N p)`` by ``1 / smoothing``; ``selective`` keeps a
            sample with probability at least ``smoothing``. In [0, 1]. Default 0.1
            (weights at most 10x, so the weighted loss keeps a bounded variance).
        sync_every: in distributed training, merge the ranks' reported losses every
            ``sync_every`` calls to ``update`` as well as at every epoch change. >= 0;
            0 (default) merges only at epoch changes, which is all the plans need.
        nonfinite: what ``update`` does with a NaN or infinite loss: ``"raise"``
            (default, ValueError naming the indices) or ``"skip"`` (drop it and count it
            in ``stats()["nonfinite"]``).

    Raises:
        ValueError: a value is out of range (the message names it, the limit and a fix).
        TypeError: a value has the wrong type.
    """

    ema_weight: float = 0.5
    prior: Optional[float] = None
    warmup_epochs: int = 2
    trained_fraction: float = 0.5
    h_share: float = 0.7
    reeval_share: float = 0.25
    refresh_every: int = 5
    beta: float = 0.33
    window: int = 1024
    smoothing: float = 0.1
    sync_every: int = 0
    nonfinite: str = "raise"

    def __post_init__(self) -> None:
        _real(self, "ema_weight", 0.0, 1.0, low_open=True,
              fix="use e.g. 0.5; 1.0 keeps only the latest loss")
        if self.prior is not None:
            _real(self, "prior", 0.0, math.inf, fix="pass None to use the mean score")
        _int(self, "warmup_epochs", 0, fix="pass 0 for no warm-up")
        _real(self, "trained_fraction", 0.0, 1.0, low_open=True,
              fix="use e.g. 0.5; 1.0 trains on every sample")
        _real(self, "h_share", 0.0, 1.0, fix="use e.g. 0.7")
        _real(self, "reeval_share", 0.0, 1.0, fix="use e.g. 0.25; 0 disables re-evaluation")
        _int(self, "refresh_every", 0, fix="pass 0 to disable refresh epochs")
        _real(self, "beta", 0.0, math.inf, low_open=True, fix="use e.g. 0.33 or 1")
        _int(self, "window", 1, fix="use e.g. 1024")
        _real(self, "smoothing", 0.0, 1.0, fix="use e.g. 0.1; 0 disables the floor")
        _int(self, "sync_every", 0, fix="pass 0 to merge only at epoch changes")
        if self.nonfinite not in NONFINITE_MODES:
            raise ValueError(f"nonfinite={self.nonfinite!r} is not one of "
                             f"{', '.join(map(repr, NONFINITE_MODES))}")

    @classmethod
    def field_names(cls) -> tuple:
        """Names of all configuration fields, in declaration order."""
        return tuple(f.name for f in dataclasses.fields(cls))

    def replace(self, **overrides: Any) -> "SamplingConfig":
        """Return a copy with ``overrides`` applied (validated like the constructor).

        Raises:
            TypeError: an override names no field; the message lists the valid names.
        """
        unknown = sorted(set(overrides) - set(self.field_names()))
        if unknown:
            raise TypeError(f"unknown sampling option(s) {', '.join(unknown)}; valid options "
                            f"are {', '.join(self.field_names())}")
        return dataclasses.replace(self, **overrides)

    def to_dict(self) -> Dict[str, Any]:
        """The configuration as a plain dict (for ``state_dict`` and logging)."""
        return dataclasses.asdict(self)


def _real(cfg: SamplingConfig, name: str, low: float, high: float, *,
          low_open: bool = False, fix: str) -> None:
    value = getattr(cfg, name)
    if isinstance(value, bool) or not isinstance(value, Real):
        raise TypeError(f"{name}={value!r} must be a number; {fix}")
    ok = math.isfinite(value) and (value > low if low_open else value >= low)
    ok = ok and value <= high
    if not ok:
        left = "(" if low_open else "["
        right = ")" if high == math.inf else "]"
        raise ValueError(f"{name}={value!r} must be in {left}{low:g}, {high:g}{right}; {fix}")
    object.__setattr__(cfg, name, float(value))


def _int(cfg: SamplingConfig, name: str, low: int, *, fix: str) -> None:
    value = getattr(cfg, name)
    if isinstance(value, bool) or not isinstance(value, Integral):
        raise TypeError(f"{name}={value!r} must be an int; {fix}")
    if value < low:
        raise ValueError(f"{name}={value!r} must be >= {low}; {fix}")
    object.__setattr__(cfg, name, int(value))
