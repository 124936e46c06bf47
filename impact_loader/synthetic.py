"""The built-in synthetic dataset used by the demo, the benchmarks and the tests."""

from __future__ import annotations

import numpy as np

__all__ = ["synthetic_samples"]


def synthetic_samples(n: int, *, record_bytes: int = 8192, features: int = 64,
                      classes: int = 10, seed: int = 0):
    """Yield ``n`` samples of a noisy Gaussian-cluster task padded to ``record_bytes``.

    Each sample is ``{"x": float32[features], "label": int, "index": int, "payload":
    uint8[...]}`` so that its record is about ``record_bytes`` long.
    """
    rng = np.random.default_rng(seed)
    centers = rng.standard_normal((classes, features)).astype(np.float32)
    pad = max(0, record_bytes - features * 4 - 256)
    for i in range(n):
        label = int(rng.integers(classes))
        x = centers[label] + 1.5 * rng.standard_normal(features).astype(np.float32)
        if rng.random() < 0.05:
            label = int(rng.integers(classes))
        yield {"x": x, "label": label, "index": i,
               "payload": rng.integers(0, 256, pad, dtype=np.uint8)}
