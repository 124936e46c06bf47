"""ArrowSource: random access to memory-mapped Arrow IPC files, and write_arrow.

An :class:`ArrowSource` reads datasets written by :func:`write_arrow` (a directory of
Arrow IPC *file* shards plus a manifest) and any other Arrow IPC data, such as the
``cache-*.arrow`` / ``data-0000X-of-0000N.arrow`` *stream* files HuggingFace
``datasets`` writes. File or stream format is told apart by the magic bytes (``ARROW1``
opens an IPC file). How columns become record fields, and the rule for nulls, is in
:mod:`impact_loader._arrow_schema`; the array column layout of write_arrow is in
:mod:`impact_loader._arrow_write`.

Files are memory-mapped (``pyarrow.memory_map``) lazily, on first use in each process
and again after a fork; the object pickles as its file list and options only.
"""

from __future__ import annotations

import glob
import json
import os
import sys
import threading
from typing import Any, Dict, Iterable, List, Optional, Sequence, Tuple, Union

import numpy as np
import pyarrow as pa

from . import records
from ._arrow_rows import ChunkView
from ._arrow_schema import FORMAT, plan_leaves
from ._arrow_write import MANIFEST, write_dataset
from .errors import (CorruptRecordError, DatasetNotFoundError, NotADatasetError,
                     SchemaMismatchError, SourceError)
from .source import check_indices

__all__ = ["ArrowSource", "write_arrow"]

PathSpec = Union[str, "os.PathLike[str]", Sequence[Union[str, "os.PathLike[str]"]]]
_GLOB_CHARS = set("*?[")


def _read_manifest(directory: str) -> Optional[Tuple[List[str], List[int]]]:
    path = os.path.join(directory, MANIFEST)
    if not os.path.isfile(path):
        return None
    try:
        with open(path, encoding="utf-8") as fh:
            meta = json.load(fh)
        if meta.get("format") != FORMAT:
            raise ValueError(f"format {meta.get('format')!r}")
        files = [os.path.join(directory, s["file"]) for s in meta["shards"]]
        return files, [int(s["rows"]) for s in meta["shards"]]
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        raise CorruptRecordError(
            f"{path!r} is not a valid write_arrow manifest ({exc!r}); write the dataset "
            f"again, or delete {MANIFEST} to read the .arrow files without it") from None


def _resolve_one(spec: str) -> Tuple[List[str], Optional[List[int]]]:
    """Files (and row counts when a manifest gives them) behind one path or glob."""
    if not os.path.exists(spec) and _GLOB_CHARS & set(spec):
        found = sorted(p for p in glob.glob(spec) if os.path.isfile(p))
        if not found:
            raise DatasetNotFoundError(f"no file matches the glob {spec!r}; check the "
                                       "pattern, e.g. 'data/train-*.arrow'")
        return found, None
    if not os.path.exists(spec):
        raise DatasetNotFoundError(
            f"{spec!r} does not exist; pass a directory written by write_arrow, an "
            ".arrow file, a list of files or a glob")
    if not os.path.isdir(spec):
        return [spec], None
    manifest = _read_manifest(spec)
    if manifest is not None:
        return manifest
    found = sorted(os.path.join(spec, f) for f in os.listdir(spec) if f.endswith(".arrow"))
    if not found:
        subdirs = sorted(d for d in os.listdir(spec)
                         if glob.glob(os.path.join(spec, d, "*.arrow")))
        hint = f" (its subdirectories {subdirs} do: pass one of them)" if subdirs else ""
        raise NotADatasetError(f"{spec!r} holds no .arrow files{hint}; pass a directory "
                               "written by write_arrow or holding Arrow IPC files")
    return found, None


def _resolve(path_or_paths: PathSpec) -> Tuple[List[str], List[Optional[int]]]:
    if isinstance(path_or_paths, (str, os.PathLike)):
        specs = [os.fspath(path_or_paths)]
    else:
        specs = [os.fspath(p) for p in path_or_paths]
        if not specs:
            raise NotADatasetError("path_or_paths is an empty list; pass at least one "
                                   "Arrow file, directory or glob")
    files: List[str] = []
    rows: List[Optional[int]] = []
    for spec in specs:
        found, counts = _resolve_one(spec)
        files.extend(os.path.abspath(f) for f in found)
        rows.extend(counts if counts is not None else [None] * len(found))
    return files, rows


class _OpenFile:
    """One memory-mapped Arrow file: its record batches as ChunkViews."""

    def __init__(self, path: str, columns: Optional[Sequence[str]]) -> None:
        self.path = path
        if sys.byteorder != "little":
            raise SourceError("ArrowSource needs a little-endian host (records are "
                              "little-endian views of the Arrow buffers)")
        try:
            self.map = pa.memory_map(path, "r")
        except FileNotFoundError:
            raise DatasetNotFoundError(f"{path!r} disappeared; was the dataset moved "
                                       "or rewritten? Create the source again") from None
        except OSError as exc:
            raise SourceError(f"cannot memory-map {path!r}: {exc}") from exc
        try:
            if self.map.size() >= 6 and self.map.read_at(6, 0) == b"ARROW1":
                reader = pa.ipc.open_file(self.map)
                schema = reader.schema
                batches = [reader.get_batch(i) for i in range(reader.num_record_batches)]
            else:
                reader = pa.ipc.open_stream(self.map)
                schema = reader.schema
                batches = list(reader)
            for batch in batches:
                batch.validate()
        except (pa.ArrowException, OSError, ValueError) as exc:
            self.map.close()
            raise CorruptRecordError(
                f"{path!r} is not a readable Arrow IPC file or stream (truncated or "
                f"corrupt: {exc}); write it again or leave it out of the inputs") from None
        self.leaves = plan_leaves(schema, path, columns)
        batches = [b for b in batches if b.num_rows]
        self.views = [ChunkView(b, self.leaves, path) for b in batches]
        self.starts = np.cumsum([0] + [b.num_rows for b in batches]).astype(np.int64)
        self.rows = int(self.starts[-1])

    def close(self) -> None:
        # Views (and any read in flight) keep their mapped region alive until dropped.
        self.map.close()

    def pack(self, chunk: int, rows: np.ndarray) -> List[bytes]:
        """Records of ``rows`` of record batch ``chunk``; a bad offset is corruption."""
        try:
            return self.views[chunk].pack(rows)
        except CorruptRecordError as exc:
            raise CorruptRecordError(f"{self.path!r}: {exc}") from None
        except (IndexError, ValueError) as exc:  # offsets pointing outside their buffer
            raise CorruptRecordError(
                f"{self.path!r}: record batch {chunk} has inconsistent offsets ({exc}); "
                "the file is corrupt: write it again") from None


class ArrowSource:
    """A Source over memory-mapped Arrow IPC files (write_arrow shards or any Arrow data).

    Row ``i`` is the ``i``-th row of the files concatenated in order: the manifest order
    for a write_arrow directory, sorted names for any other directory or a glob, and the
    given order for a list. Neighbouring indices are neighbours on storage.
    ``read_many`` returns records in the :mod:`impact_loader.records` format, packed
    straight from the mapped buffers; :meth:`decode` is :func:`records.decode`.

    Files are mapped on first use in each process. The row counts of a write_arrow
    directory come from its manifest; any other file is opened once by the constructor
    to count its rows (and check its columns), and the counts travel with the pickle.

    Args:
        path_or_paths: a directory, an ``.arrow`` file, a glob (``"data/*.arrow"``), or
            a list of any of these.
        columns: record fields to keep (a struct's name keeps all its children);
            None keeps every field.

    Raises:
        DatasetNotFoundError: a path does not exist or a glob matches nothing.
        NotADatasetError: a directory holds no .arrow file, or a column cannot be read.
        CorruptRecordError: a file is truncated or corrupt, or disagrees with the
            manifest.
        SchemaMismatchError: two files yield different fields.
    """

    def __init__(self, path_or_paths: PathSpec, *,
                 columns: Optional[Sequence[str]] = None) -> None:
        if isinstance(columns, str):
            columns = [columns]
        self._columns = None if columns is None else tuple(columns)
        self._label = (os.fspath(path_or_paths)
                       if isinstance(path_or_paths, (str, os.PathLike))
                       else f"{len(path_or_paths)} paths")
        self._files, counts = _resolve(path_or_paths)
        self._reset()
        self._key = None
        for i, count in enumerate(counts):
            if count is None:  # no manifest: open the file now to count its rows
                counts[i] = self._file(i).rows
        self._rows = [int(c) for c in counts]
        self._starts = np.cumsum([0] + self._rows).astype(np.int64)

    def _reset(self) -> None:
        self._pid = os.getpid()
        self._lock = threading.Lock()
        self._open: List[Optional[_OpenFile]] = [None] * len(self._files)

    def _file(self, i: int) -> _OpenFile:
        if self._pid != os.getpid():  # forked: never share the parent's maps or lock
            self._reset()
        opened = self._open[i]
        if opened is not None:
            return opened
        with self._lock:
            opened = self._open[i]
            if opened is None:
                opened = _OpenFile(self._files[i], self._columns)
                self._check(i, opened)
                self._open[i] = opened
        return opened

    def _check(self, i: int, opened: _OpenFile) -> None:
        want = getattr(self, "_rows", None)
        if want is not None and want[i] != opened.rows:
            raise CorruptRecordError(
                f"{self._files[i]!r} holds {opened.rows} rows, the manifest says "
                f"{want[i]}; the dataset was modified: write it again")
        key = [leaf.key() for leaf in opened.leaves]
        if self._key is None:
            self._key = (self._files[i], key)
        elif self._key[1] != key:
            raise SchemaMismatchError(
                f"{self._files[i]!r} yields fields {key}, {self._key[0]!r} yields "
                f"{self._key[1]}; every file of one source needs the same fields "
                "(select common ones with columns=[...])")

    def __len__(self) -> int:
        return int(self._starts[-1])

    def __repr__(self) -> str:
        return f"ArrowSource({self._label!r}, files={len(self._files)}, rows={len(self)})"

    def files(self) -> List[str]:
        """Absolute paths of the data files, in row order (for page-cache eviction)."""
        return list(self._files)

    def read_many(self, indices: Iterable[int]) -> List[bytes]:
        """Return the records of ``indices`` in request order (thread-safe).

        Args:
            indices: row indices, ``0 <= i < len(self)``; repeats are allowed.

        Raises:
            IndexError: an index is negative or out of range; the message names it.
            CorruptRecordError: a file is corrupt or changed since it was opened.
        """
        idx = check_indices(indices, len(self), repr(self))
        if idx.size == 0:
            return []
        order = np.argsort(idx, kind="stable")
        ordered = idx[order]
        out: List[Any] = [None] * len(idx)
        file_of = np.searchsorted(self._starts, ordered, side="right") - 1
        for a, b in _runs(file_of):
            f = int(file_of[a])
            opened = self._file(f)
            local = ordered[a:b] - self._starts[f]
            if len(opened.views) == 1:  # write_arrow shards: one batch per file
                for pos, rec in zip(order[a:b].tolist(), opened.pack(0, local)):
                    out[pos] = rec
                continue
            chunk_of = np.searchsorted(opened.starts, local, side="right") - 1
            for c0, c1 in _runs(chunk_of):
                c = int(chunk_of[c0])
                recs = opened.pack(c, local[c0:c1] - opened.starts[c])
                for pos, rec in zip(order[a + c0:a + c1].tolist(), recs):
                    out[pos] = rec
        return out

    def decode(self, raw: Any) -> Dict[str, Any]:
        """Decode a record from :meth:`read_many` (see :func:`records.decode`)."""
        return records.decode(raw)

    def close(self) -> None:
        """Unmap every file; a later read maps them again."""
        with self._lock:
            opened, self._open = self._open, [None] * len(self._files)
        for f in opened:
            if f is not None:
                f.close()

    def __getstate__(self) -> Dict[str, Any]:
        return {"files": self._files, "rows": self._rows, "columns": self._columns,
                "label": self._label}

    def __setstate__(self, state: Dict[str, Any]) -> None:
        self._files, self._rows = state["files"], state["rows"]
        self._columns, self._label = state["columns"], state["label"]
        self._starts = np.cumsum([0] + self._rows).astype(np.int64)
        self._key = None
        self._reset()


def _runs(keys: np.ndarray) -> List[Tuple[int, int]]:
    """(start, stop) positions of the runs of equal values in a sorted array."""
    cuts = np.flatnonzero(keys[1:] != keys[:-1]) + 1
    edges = [0] + cuts.tolist() + [len(keys)]
    return list(zip(edges[:-1], edges[1:]))


def write_arrow(path: Union[str, "os.PathLike[str]"], samples: Iterable[Dict[str, Any]],
                rows_per_shard: Optional[int] = None, overwrite: bool = False, *,
                progress: bool = False) -> ArrowSource:
    """Write samples as a directory of Arrow IPC file shards and open it.

    The directory is written under a temporary name and renamed into place at the end,
    so a failed or interrupted write never leaves a dataset that looks valid. Column
    layout: see :mod:`impact_loader._arrow_write` (int64, float64, bool, string, binary,
    and ``fixed_size_list`` / ``list`` + shape column for numpy arrays).

    Args:
        path: the dataset directory to create.
        samples: iterable of dicts ``str -> numpy array | int | float | bool | str |
            bytes``, the same keys and dtypes in every dict (array shapes may vary).
        rows_per_shard: rows (samples) per shard file; a shard's samples are held in
            memory until it is written. None cuts shards at about
            ``AUTO_SHARD_BYTES`` (128 MiB) of sample data.
        overwrite: replace an existing write_arrow dataset at ``path``.
        progress: show a tqdm progress bar.

    Returns:
        An :class:`ArrowSource` over the new dataset.

    Raises:
        DatasetExistsError: ``path`` exists and ``overwrite`` is False, or it exists and
            is not a write_arrow dataset.
        SchemaMismatchError: samples disagree on keys or dtypes (the message names the
            sample number, the field and both types), a value cannot be stored, or
            ``samples`` is empty.
        ValueError: ``rows_per_shard`` is not an int >= 1 or None.
    """
    final = write_dataset(path, samples, rows_per_shard=rows_per_shard,
                          overwrite=overwrite, progress=progress)
    return ArrowSource(final)

