"""What a benchmark step computes: the built-in classification task, or a stand-in.

On the built-in synthetic dataset (:func:`impact_loader.synthetic.synthetic_samples`: a
10-class task of overlapping Gaussian clusters with 5% label noise, records padded to a
chosen size) each step trains a small MLP for real, so per-sample losses drive the
importance sampler and test accuracy can be compared between loaders.

On the user's own data there is no model to train. :class:`StandInTask` decodes and
transforms the samples like a real job would, spends ``compute_ms`` per step, and reports
a synthetic per-sample loss: a fixed, heavy-tailed difficulty per sample (log-normal,
seeded) that decays over epochs, plus noise. It exercises the importance machinery as a
training run would, but accuracy is not defined for it.
"""

from __future__ import annotations

import time
from itertools import islice
from typing import Any, Callable, Optional, Tuple

import numpy as np
import torch
import torch.nn.functional as F

from ..synthetic import synthetic_samples

__all__ = ["FEATURES", "CLASSES", "HIDDEN", "to_xy", "to_size", "make_model", "ModelTask",
           "StandInTask", "synthetic_test_set", "fastest_rate"]

FEATURES, CLASSES = 64, 10
HIDDEN = 128  # hidden units of the benchmarks' MLP


def make_model(seed: int, features: int = FEATURES,
               classes: int = CLASSES) -> torch.nn.Module:
    """The benchmarks' MLP with weights drawn from ``seed`` (global RNG left untouched)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return torch.nn.Sequential(torch.nn.Linear(features, HIDDEN), torch.nn.ReLU(),
                                   torch.nn.Linear(HIDDEN, classes))


def to_xy(sample: dict) -> Tuple[torch.Tensor, int]:
    """Decoded synthetic sample -> (features, label); runs in the DataLoader workers."""
    return torch.from_numpy(sample["x"]), sample["label"]


def to_size(sample: Any) -> int:
    """Any decoded sample -> its payload size in bytes (a transform for foreign data).

    Collating arbitrary user samples (strings, ragged arrays) may not work, so the
    stand-in task keeps only a number; the sample was still read and decoded.
    """
    if isinstance(sample, dict):
        return sum(_nbytes(v) for v in sample.values())
    return _nbytes(sample)


def _nbytes(value: Any) -> int:
    if isinstance(value, np.ndarray):
        return int(value.nbytes)
    if isinstance(value, (bytes, bytearray, memoryview, str)):
        return len(value)
    return 8


def synthetic_test_set(n_train: int, n_test: int, *, record_bytes: int,
                       seed: int) -> Tuple[torch.Tensor, torch.Tensor]:
    """Held-out samples of the same task: generated after the ``n_train`` training ones."""
    test = list(islice(synthetic_samples(n_train + n_test, record_bytes=record_bytes,
                                         features=FEATURES, classes=CLASSES, seed=seed),
                       n_train, None))
    x = torch.from_numpy(np.stack([s["x"] for s in test]))
    y = torch.tensor([s["label"] for s in test])
    return x, y


class ModelTask:
    """A small MLP trained with SGD on the synthetic task, plus ``compute_ms`` of sleep.

    The sleep stands in for an accelerator step; the MLP makes the losses real.

    Args:
        seed: seeds the model's initial weights (the same for every loader).
        compute_ms: milliseconds slept per step, >= 0.
        test: ``(x, y)`` held-out tensors, or ``None``.
    """

    def __init__(self, *, seed: int, compute_ms: float,
                 test: Optional[Tuple[torch.Tensor, torch.Tensor]] = None) -> None:
        self.model = make_model(seed)
        self.opt = torch.optim.SGD(self.model.parameters(), lr=0.05, momentum=0.9)
        self.sleep = compute_ms / 1e3
        self.test = test

    def step(self, batch: Any, weights: Optional[torch.Tensor], epoch: int,
             indices: torch.Tensor) -> torch.Tensor:
        """One optimisation step on ``batch = (x, y)``; returns per-sample losses."""
        x, y = batch
        losses = F.cross_entropy(self.model(x), y, reduction="none")
        loss = losses.mean() if weights is None else (losses * weights).mean()
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt.step()
        if self.sleep:
            time.sleep(self.sleep)
        return losses.detach()

    def accuracy(self) -> float:
        """Share of the held-out set classified correctly (NaN without a test set)."""
        if self.test is None:
            return float("nan")
        x, y = self.test
        with torch.no_grad():
            return float((self.model(x).argmax(1) == y).float().mean())

    def samples_per_second(self, batch_size: int, steps: int = 40, warm: int = 5,
                           rounds: int = 4) -> float:
        """Throughput of the step alone on in-memory batches (the compute term).

        The fastest of ``rounds`` rounds of ``steps // rounds`` steps: a stall of the
        shared host only makes a round slower, and the bound needs the step's own speed.
        """
        state = {k: v.clone() for k, v in self.model.state_dict().items()}
        x = torch.randn(batch_size, FEATURES)
        y = torch.randint(0, CLASSES, (batch_size,))
        idx = torch.arange(batch_size)
        rate = fastest_rate(lambda: self.step((x, y), None, 0, idx), batch_size,
                            steps=steps, warm=warm, rounds=rounds)
        self.model.load_state_dict(state)  # leave the model as it was built
        self.opt = torch.optim.SGD(self.model.parameters(), lr=0.05, momentum=0.9)
        return rate


class StandInTask:
    """Sleep ``compute_ms`` per step and report synthetic per-sample losses.

    Args:
        n: dataset size (samples).
        seed: seeds the per-sample difficulties.
        compute_ms: milliseconds slept per step, >= 0.
    """

    def __init__(self, n: int, *, seed: int, compute_ms: float) -> None:
        rng = np.random.default_rng(seed)
        self.difficulty = rng.lognormal(mean=0.0, sigma=1.0, size=n).astype(np.float32)
        self.rng = np.random.default_rng(seed + 1)
        self.sleep = compute_ms / 1e3

    def step(self, batch: Any, weights: Optional[torch.Tensor], epoch: int,
             indices: torch.Tensor) -> torch.Tensor:
        """Sleep, then the losses of ``indices`` at ``epoch``."""
        if self.sleep:
            time.sleep(self.sleep)
        idx = indices.numpy()
        noise = self.rng.lognormal(0.0, 0.25, size=idx.size).astype(np.float32)
        return torch.from_numpy(self.difficulty[idx] * noise / (1.0 + 0.3 * epoch))

    def accuracy(self) -> float:
        """Not defined for a stand-in task."""
        return float("nan")

    def samples_per_second(self, batch_size: int, steps: int = 20, warm: int = 2,
                           rounds: int = 4) -> float:
        """Throughput of the step alone (the sleep and the loss); fastest round."""
        idx = torch.arange(batch_size)
        return fastest_rate(lambda: self.step(None, None, 0, idx), batch_size,
                            steps=steps, warm=warm, rounds=rounds)


def fastest_rate(step: Callable[[], Any], batch_size: int, *, steps: int, warm: int,
                 rounds: int) -> float:
    """Samples per second of ``step`` in its fastest of ``rounds`` timed rounds.

    ``warm`` untimed calls first, then ``steps`` calls split into ``rounds`` rounds
    (at least one step each).
    """
    for _ in range(warm):
        step()
    per_round = max(1, steps // max(1, rounds))
    best = float("inf")
    for _ in range(max(1, rounds)):
        start = time.perf_counter()
        for _ in range(per_round):
            step()
        best = min(best, time.perf_counter() - start)
    return per_round * batch_size / best
