"""Writing samples as a directory of Arrow IPC file shards (see ``write_arrow``).

Layout of a dataset directory::

    shard-00000.arrow ... shard-NNNNN.arrow   uncompressed Arrow IPC *file* format,
                                              one record batch each
    impact_loader.json                        manifest: format marker, total rows,
                                              shard names and row counts

Columns have native Arrow types so pyarrow, pandas or HuggingFace ``datasets`` can read
the shards: int -> int64, float -> float64, bool -> bool, str -> string, bytes ->
binary (``large_`` variants above 2 GiB per shard). A numpy array field becomes:

* a plain primitive column when every array of the shard is 0-d;
* ``fixed_size_list<dtype>`` of the flattened values when every array of the shard has
  one shape (the common case: the layout other tools read best, no offsets to store);
* otherwise ``list<dtype>`` of the flattened values plus a ``list<int64>`` column
  ``"<field>.__shape__"`` holding each row's shape.

The schema metadata key ``b"impact_loader"`` records each field's kind, numpy dtype and
fixed shape (or shape column), so records round-trip exactly (dtype, shape, value).
The choice is made per shard, which is why a shard's rows are held in memory until it
is written (``rows_per_shard`` bounds that memory).
"""

from __future__ import annotations

import json
import os
import shutil
from typing import Any, Dict, Iterable, List, Mapping, Optional

import numpy as np
import pyarrow as pa

from ._arrow_schema import FORMAT, META_KEY
from ._writing import SchemaChecker, finish_dataset, prepare_target, progress_bar
from .errors import DatasetExistsError, SchemaMismatchError

__all__ = ["write_dataset", "MANIFEST", "AUTO_SHARD_BYTES"]

MANIFEST = "impact_loader.json"
AUTO_SHARD_BYTES = 128 << 20  # rows_per_shard=None cuts shards at about this size
_MAX32 = (1 << 31) - 1
_SCALAR_TYPES = {"int": pa.int64(), "float": pa.float64(), "bool": pa.bool_()}


def _array_column(name: str, dtype: np.dtype, values: List[Any]):
    """Arrow columns and metadata entry for one numpy-array field of a shard."""
    arrs = [np.asarray(v).astype(dtype, order="C", copy=False) for v in values]
    shapes = {a.shape for a in arrs}
    flat = np.concatenate([a.reshape(-1) for a in arrs])
    meta: Dict[str, Any] = {"name": name, "kind": "array", "dtype": dtype.str}
    shape = next(iter(shapes))
    if len(shapes) == 1 and shape == ():
        return [(name, pa.array(flat))], dict(meta, shape=[])
    size = int(np.prod(shape, dtype=np.int64))
    if len(shapes) == 1 and size > 0:
        col = pa.FixedSizeListArray.from_arrays(pa.array(flat), size)
        return [(name, col)], dict(meta, shape=list(shape))
    offsets = np.zeros(len(arrs) + 1, np.int64)
    np.cumsum([a.size for a in arrs], out=offsets[1:])
    if offsets[-1] > _MAX32:
        col = pa.LargeListArray.from_arrays(pa.array(offsets), pa.array(flat))
    else:
        col = pa.ListArray.from_arrays(pa.array(offsets.astype(np.int32)), pa.array(flat))
    shape_name = f"{name}.__shape__"
    shape_col = pa.array([list(a.shape) for a in arrs], pa.list_(pa.int64()))
    return ([(name, col), (shape_name, shape_col)],
            dict(meta, shape=None, shape_column=shape_name))


def _column(name: str, kind: str, dtype: np.dtype, values: List[Any]):
    if kind in _SCALAR_TYPES:
        typ = _SCALAR_TYPES[kind]
        cast = {"int": int, "float": float, "bool": bool}[kind]
        col = pa.array([cast(v) for v in values], typ)
    elif kind == "str":
        encoded = [v.encode("utf-8") for v in values]
        large = sum(map(len, encoded)) > _MAX32
        col = pa.array(values, pa.large_string() if large else pa.string())
    elif kind == "bytes":
        values = [bytes(v) for v in values]
        large = sum(map(len, values)) > _MAX32
        col = pa.array(values, pa.large_binary() if large else pa.binary())
    else:
        return _array_column(name, dtype, values)
    return [(name, col)], {"name": name, "kind": kind, "dtype": dtype.str, "shape": None}


def _write_shard(path: str, schema_info: Mapping[str, tuple],
                 rows: List[Mapping[str, Any]]) -> None:
    names, arrays, fields_meta = [], [], []
    for name, (kind, dtype) in schema_info.items():
        cols, meta = _column(name, kind, np.dtype(dtype), [r[name] for r in rows])
        for col_name, col in cols:
            if col_name in names or (col_name != name and col_name in schema_info):
                raise SchemaMismatchError(
                    f"write_arrow: column name {col_name!r} is used twice (field {name!r} "
                    "needs it for its shapes); rename that field")
            names.append(col_name)
            arrays.append(col)
        fields_meta.append(meta)
    meta = json.dumps({"format": FORMAT, "version": 1, "fields": fields_meta})
    batch = pa.RecordBatch.from_arrays(arrays, names=names)
    batch = batch.replace_schema_metadata({META_KEY: meta.encode("utf-8")})
    with open(path, "wb") as fh:
        with pa.ipc.new_file(fh, batch.schema) as writer:
            writer.write_batch(batch)
        fh.flush()
        os.fsync(fh.fileno())


def _check_replaceable(path: str) -> None:
    """Refuse to let overwrite=True delete something that is not an Arrow dataset."""
    if not os.path.lexists(path):
        return
    if os.path.isdir(path) and (not os.listdir(path)
                                or os.path.isfile(os.path.join(path, MANIFEST))):
        return
    raise DatasetExistsError(
        f"{path!r} exists and is not an impact-loader Arrow dataset (no {MANIFEST}); "
        "overwrite=True only replaces datasets written by write_arrow: remove it "
        "yourself or choose another path")


def _sample_size(sample: Mapping[str, Any]) -> int:
    return sum(v.nbytes if isinstance(v, np.ndarray) else
               len(v) if isinstance(v, (str, bytes, bytearray)) else 8
               for v in sample.values())


def write_dataset(path: str, samples: Iterable[Mapping[str, Any]], *,
                  rows_per_shard: Optional[int], overwrite: bool, progress: bool) -> str:
    """Write ``samples`` as an Arrow dataset directory; return its absolute path."""
    if rows_per_shard is not None and (isinstance(rows_per_shard, bool) or not isinstance(
            rows_per_shard, (int, np.integer)) or rows_per_shard < 1):
        raise ValueError(f"rows_per_shard={rows_per_shard!r} must be an int >= 1, or None "
                         f"to cut shards at about {AUTO_SHARD_BYTES >> 20} MiB")
    if overwrite:
        _check_replaceable(os.path.abspath(os.fspath(path)))
    final, tmp = prepare_target(path, overwrite)
    where = f"write_arrow({final!r})"
    checker = SchemaChecker(where)
    total = len(samples) if hasattr(samples, "__len__") else None  # type: ignore
    bar = progress_bar(progress, "write_arrow", total)
    shards: List[Dict[str, Any]] = []
    rows: List[Mapping[str, Any]] = []
    buffered = 0

    def flush() -> None:
        name = f"shard-{len(shards):05d}.arrow"
        _write_shard(os.path.join(tmp, name), checker.schema, rows)
        shards.append({"file": name, "rows": len(rows)})
        rows.clear()

    try:
        os.makedirs(tmp)
        for number, sample in enumerate(samples):
            try:
                checker.check(number, sample)
            except SchemaMismatchError as exc:
                if f"sample {number}" in str(exc):
                    raise
                raise SchemaMismatchError(f"{where}: sample {number}: {exc}") from None
            rows.append(sample)
            if rows_per_shard is None:
                buffered += _sample_size(sample)
            if len(rows) == rows_per_shard or buffered >= AUTO_SHARD_BYTES:
                flush()
                buffered = 0
            bar.update(1)
        if rows:
            flush()
        if not shards:
            raise SchemaMismatchError(
                f"{where}: samples is empty; an Arrow dataset needs at least one sample "
                "(its first sample fixes the schema)")
        manifest = {"format": FORMAT, "version": 1,
                    "rows": sum(s["rows"] for s in shards), "shards": shards}
        with open(os.path.join(tmp, MANIFEST), "w", encoding="utf-8") as fh:
            json.dump(manifest, fh, indent=1)
            fh.flush()
            os.fsync(fh.fileno())
        finish_dataset(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    finally:
        bar.close()
    return final
