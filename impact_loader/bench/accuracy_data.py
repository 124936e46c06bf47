"""The two tasks of the accuracy benchmark, written as LMDB training sets + test tensors.

    digits     scikit-learn's bundled 8x8 digits (1797 samples, 64 features, 10
               classes), stratified 75/25 train/test split with a fixed seed, pixel
               values scaled to [0, 1]
    synthetic  :func:`impact_loader.synthetic.synthetic_samples` (Gaussian clusters, 5%
               label noise, 10 classes, 64 features + payload); the test set is drawn
               after the training samples from the same generator (same class centres)

The synthetic clusters are far apart in 64 dimensions, so the 5% label noise sets the
ceiling (about 95.5%): an MLP gets there within one or two epochs, and longer training
then slowly fits the noisy labels, which lowers test accuracy for every policy alike.
"""

from __future__ import annotations

import os
from itertools import islice
from typing import Any, Dict

import numpy as np
import torch

__all__ = ["DATASETS", "DEFAULTS", "QUICK", "CLASSES", "DIGITS_TEST_FRACTION", "SPLIT_SEED", "SYNTHETIC_SEED",
           "prepare"]

DATASETS = ("digits", "synthetic")
CLASSES = 10                 # classes of both tasks
DIGITS_TEST_FRACTION = 0.25  # share of digits held out for testing
SPLIT_SEED = 0               # random_state of the digits split
SYNTHETIC_SEED = 0           # seed of the synthetic generator
# Defaults of a full run (about 1-2 minutes on 2 idle cores) and of --quick (seconds).
# 16 epochs: uniform has converged on digits (within about half a point of its plateau).
DEFAULTS = {"epochs": 16, "synthetic_samples": 5_000, "synthetic_test_samples": 2_000}
QUICK = {"epochs": 7, "synthetic_samples": 1_000, "synthetic_test_samples": 500}


def _digits(path: str) -> tuple:
    try:
        from sklearn.datasets import load_digits
        from sklearn.model_selection import train_test_split
    except ImportError:
        raise ImportError("the 'digits' dataset needs scikit-learn; install it with "
                          "pip install scikit-learn, or run --datasets synthetic") from None
    import impact_loader as il

    x, y = load_digits(return_X_y=True)
    x = (x / 16.0).astype(np.float32)
    x_tr, x_te, y_tr, y_te = train_test_split(x, y, test_size=DIGITS_TEST_FRACTION,
                                              stratify=y, random_state=SPLIT_SEED)
    il.write_lmdb(path, ({"x": xi, "label": int(yi), "index": i}
                         for i, (xi, yi) in enumerate(zip(x_tr, y_tr))))
    return len(y_tr), x_te, y_te


def _synthetic(path: str, n: int, n_test: int) -> tuple:
    import impact_loader as il
    from impact_loader.synthetic import synthetic_samples

    gen = synthetic_samples(n + n_test, classes=CLASSES, seed=SYNTHETIC_SEED)
    il.write_lmdb(path, islice(gen, n))  # islice stops without drawing sample n
    test = list(gen)
    return n, np.stack([s["x"] for s in test]), np.array([s["label"] for s in test])


def prepare(name: str, directory: str, *, synthetic_samples: int,
            synthetic_test_samples: int) -> Dict[str, Any]:
    """Write ``name``'s training set to ``directory/<name>.lmdb``.

    Args:
        name: one of :data:`DATASETS`.
        directory: an existing directory for the LMDB.
        synthetic_samples: training samples of ``synthetic``.
        synthetic_test_samples: held-out test samples of ``synthetic``.

    Returns:
        ``path``, ``train_samples``, ``test_samples``, ``features``, ``classes``,
        ``record_bytes`` (mean bytes per stored record) and the test set as tensors
        ``test_x`` (float32, samples x features) and ``test_y`` (int64 labels).

    Raises:
        ValueError: unknown ``name``. ImportError: ``digits`` without scikit-learn.
    """
    import impact_loader as il

    if name not in DATASETS:
        raise ValueError(f"dataset {name!r} is unknown; choose from {', '.join(DATASETS)}")
    path = os.path.join(directory, f"{name}.lmdb")
    if name == "digits":
        n, x_te, y_te = _digits(path)
    else:
        n, x_te, y_te = _synthetic(path, synthetic_samples, synthetic_test_samples)
    src = il.LMDBSource(path)
    try:
        probe = np.unique(np.linspace(0, n - 1, 64).astype(np.int64))
        record = float(np.mean([len(r) for r in src.read_many(probe)]))
    finally:
        src.close()
    return {"path": path, "train_samples": int(n), "test_samples": int(len(y_te)),
            "features": int(x_te.shape[1]), "classes": CLASSES, "record_bytes": record,
            "test_x": torch.from_numpy(x_te),
            "test_y": torch.from_numpy(y_te.astype(np.int64))}
