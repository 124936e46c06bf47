"""Readers that turn common on-disk data into sample dicts, for ``impact-loader convert``.

* ``.npy``: one array; sample *i* is ``{"x": a[i]}``.
* ``.npz``: arrays sharing their first dimension; sample *i* is ``{name: a[i], ...}``.
* a folder of files per class (``root/<class>/<file>``, classes sorted by name): sample
  is ``{"data": file bytes, "label": class number, "path": relative path}``.
* an Arrow or Parquet table: one sample per row; lists become arrays, structs are
  flattened to ``"parent.child"`` keys.
"""

from __future__ import annotations

import os
from typing import Any, Dict, Iterator, Tuple

import numpy as np

from .errors import DatasetNotFoundError, NotADatasetError, SchemaMismatchError

__all__ = ["open_input", "row_to_sample"]


def open_input(path: str) -> Tuple[int, Iterator[Dict[str, Any]]]:
    """Return (number of samples, iterator of samples) for a convertible input.

    Raises:
        DatasetNotFoundError: ``path`` does not exist.
        NotADatasetError: the input kind is not recognised.
    """
    path = os.fspath(path)
    if not os.path.exists(path):
        raise DatasetNotFoundError(f"input {path!r} does not exist; check the path")
    if os.path.isdir(path):
        return _class_folders(path)
    if path.endswith(".npy"):
        arr = np.load(path, mmap_mode="r", allow_pickle=False)
        if arr.ndim == 0:
            raise NotADatasetError(f"{path!r} holds a scalar; need an array of samples")
        return len(arr), ({"x": np.asarray(arr[i])} for i in range(len(arr)))
    if path.endswith(".npz"):
        return _npz(path)
    if path.endswith((".parquet", ".pq", ".arrow", ".feather", ".ipc")):
        return _table(path)
    raise NotADatasetError(
        f"do not know how to convert {path!r}: expected .npy, .npz, .parquet, .arrow, "
        "or a folder with one sub-folder of files per class")


def _npz(path: str) -> Tuple[int, Iterator[Dict[str, Any]]]:
    data = np.load(path, allow_pickle=False)
    names = list(data.files)
    if not names:
        raise NotADatasetError(f"{path!r} holds no arrays")
    arrays = {n: data[n] for n in names}
    lengths = {n: (len(a) if a.ndim else -1) for n, a in arrays.items()}
    if len(set(lengths.values())) != 1 or -1 in lengths.values():
        raise SchemaMismatchError(
            f"{path!r}: arrays must share their first dimension (one row per sample), "
            f"got lengths {lengths}")
    n = next(iter(lengths.values()))

    def gen() -> Iterator[Dict[str, Any]]:
        for i in range(n):
            yield {k: _scalar_or_array(a[i]) for k, a in arrays.items()}

    return n, gen()


def _scalar_or_array(value: np.ndarray) -> Any:
    arr = np.asarray(value)
    if arr.ndim == 0 and arr.dtype.kind in "iub":
        return bool(arr) if arr.dtype.kind == "b" else int(arr)
    if arr.ndim == 0 and arr.dtype.kind == "f":
        return float(arr)
    return arr


def _class_folders(root: str) -> Tuple[int, Iterator[Dict[str, Any]]]:
    classes = sorted(d for d in os.listdir(root) if os.path.isdir(os.path.join(root, d)))
    files = [(c, f) for label, c in enumerate(classes)
             for f in sorted(os.listdir(os.path.join(root, c)))
             if os.path.isfile(os.path.join(root, c, f))]
    if not files:
        raise NotADatasetError(
            f"{root!r} has no <class>/<file> entries; a class-folder input needs one "
            "sub-folder per class holding the sample files")
    label_of = {c: i for i, c in enumerate(classes)}

    def gen() -> Iterator[Dict[str, Any]]:
        for c, f in files:
            with open(os.path.join(root, c, f), "rb") as fh:
                yield {"data": fh.read(), "label": label_of[c], "path": f"{c}/{f}"}

    return len(files), gen()


def _table(path: str) -> Tuple[int, Iterator[Dict[str, Any]]]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    if path.endswith((".parquet", ".pq")):
        pf = pq.ParquetFile(path)
        n, batches = pf.metadata.num_rows, pf.iter_batches(batch_size=1024)
    else:
        with pa.memory_map(path) as src:
            head = src.read(6)
        opener = pa.ipc.open_file if head == b"ARROW1" else pa.ipc.open_stream
        table = opener(pa.memory_map(path)).read_all()
        n, batches = table.num_rows, table.to_batches(max_chunksize=1024)

    def gen() -> Iterator[Dict[str, Any]]:
        for batch in batches:
            for row in batch.to_pylist():
                yield row_to_sample(row)

    return n, gen()


def row_to_sample(row: Dict[str, Any], prefix: str = "") -> Dict[str, Any]:
    """Turn a row of Python values (from Arrow/Parquet) into a storable sample dict.

    Raises:
        SchemaMismatchError: a value is null or of a type that cannot be stored.
    """
    out: Dict[str, Any] = {}
    for key, value in row.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(row_to_sample(value, prefix=f"{name}."))
        elif isinstance(value, list):
            out[name] = np.asarray(value)
        elif value is None:
            raise SchemaMismatchError(
                f"field {name!r} is null; fill or drop nulls before converting")
        else:
            out[name] = value
    return out
