"""LMDB storage: ``write_lmdb`` and ``LMDBSource``, safe under fork, spawn and forkserver.

Layout written by :func:`write_lmdb`: one entry per sample under an 8-byte big-endian
key (so neighbouring indices are neighbours in the B-tree and on disk), the value a
record (:mod:`impact_loader.records`), plus one metadata entry ``__impact_meta__`` (JSON:
format, version, length, schema) that sorts after every sample key.

Process safety: sources open their environment lazily, once per process, through the
registry in :mod:`impact_loader._lmdb_env`.
"""

from __future__ import annotations

import json
import os
import shutil
import struct
from typing import Any, Callable, Iterable, List, Mapping, Optional, Sequence

import lmdb

from . import records
from ._lmdb_env import acquire_env, release_env
from ._writing import SchemaChecker, finish_dataset, prepare_target, progress_bar
from .errors import CorruptRecordError, DatasetNotFoundError, NotADatasetError
from .source import check_indices

__all__ = ["write_lmdb", "LMDBSource", "index_key", "AsciiKeys", "META_KEY"]

META_KEY = b"__impact_meta__"
FORMAT = "impact-loader/lmdb"
_KEY = struct.Struct(">Q")


def index_key(index: int) -> bytes:
    """The key of sample ``index`` in an LMDB written by :func:`write_lmdb`."""
    return _KEY.pack(index)


class AsciiKeys:
    """Key function for LMDBs keyed by zero-padded decimal text, e.g. ``b"00000042"``.

    Args:
        width: number of digits (zero padded).
        prefix: bytes before the digits (e.g. ``b"img-"``).
    """

    def __init__(self, width: int = 8, prefix: bytes = b"") -> None:
        if width < 1:
            raise ValueError(f"width={width} must be >= 1 digit")
        self.width = width
        self.prefix = bytes(prefix)

    def __call__(self, index: int) -> bytes:
        return self.prefix + b"%0*d" % (self.width, index)

    def __repr__(self) -> str:
        return f"AsciiKeys(width={self.width}, prefix={self.prefix!r})"


def _resolve(path: str) -> tuple:
    """Return (realpath, subdir) for an LMDB directory or data file, or raise."""
    path = os.fspath(path)
    if not os.path.exists(path):
        raise DatasetNotFoundError(
            f"LMDB dataset {path!r} does not exist; write one with "
            "impact_loader.write_lmdb(path, samples) or check the path")
    real = os.path.realpath(path)
    if os.path.isdir(real):
        if not os.path.isfile(os.path.join(real, "data.mdb")):
            raise NotADatasetError(
                f"{path!r} is a directory without data.mdb, so not an LMDB environment; "
                "pass the directory that holds data.mdb")
        return real, True
    return real, False


class LMDBSource:
    """Reads samples from an LMDB environment (read-only, opened lazily per process).

    Works on LMDBs written by :func:`write_lmdb` with no options, and on existing
    LMDB datasets written by other tools through ``key_fn`` / ``decode_fn``.

    Args:
        path: LMDB directory (holding ``data.mdb``) or a single-file environment.
        key_fn: maps a sample index to its key. Default: 8-byte big-endian index, as
            written by :func:`write_lmdb`. Must be picklable (a module-level function or
            :class:`AsciiKeys`) for spawn workers.
        decode_fn: maps a stored value to a sample. Default: :func:`records.decode`.
        length: number of samples. Default: read from the metadata entry, else from
            ``length_key``, else the number of entries in the database.
        length_key: key whose value is the sample count as ASCII digits (a common
            convention, e.g. ``b"__len__"``), used when there is no impact metadata.
        max_readers: LMDB reader slots (only matters for many threads).

    Raises:
        DatasetNotFoundError: ``path`` does not exist.
        NotADatasetError: ``path`` is not an LMDB environment.
    """

    def __init__(self, path: str, *, key_fn: Optional[Callable[[int], bytes]] = None,
                 decode_fn: Optional[Callable[[bytes], Any]] = None,
                 length: Optional[int] = None, length_key: Optional[bytes] = None,
                 max_readers: int = 256) -> None:
        self.path = os.fspath(path)
        self._real, self._subdir = _resolve(self.path)
        self.key_fn = key_fn
        self.decode_fn = decode_fn
        self.length_key = length_key
        self.max_readers = int(max_readers)
        self._env = None
        self._pid = -1
        self._meta = self._read_meta()
        if length is None:
            length = self._infer_length()
        if length < 0:
            raise ValueError(f"length={length} must be >= 0 samples")
        self._length = int(length)

    # -- process-local environment ------------------------------------------------
    def _environment(self) -> "lmdb.Environment":
        pid = os.getpid()
        if self._env is None or self._pid != pid:
            self._env = acquire_env(self._real, self._subdir, self.max_readers)
            self._pid = pid
        return self._env

    def close(self) -> None:
        """Release this source's handle on the environment in this process."""
        if self._env is not None and self._pid == os.getpid():
            release_env(self._real)
        self._env = None

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:
            pass

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        state["_env"] = None
        state["_pid"] = -1
        return state

    # -- metadata -----------------------------------------------------------------
    def _read_meta(self) -> Optional[dict]:
        with self._environment().begin() as txn:
            raw = txn.get(META_KEY)
        if raw is None:
            return None
        try:
            meta = json.loads(raw)
        except ValueError:
            raise CorruptRecordError(
                f"{self.path!r}: metadata entry {META_KEY!r} is not JSON; the dataset is "
                "damaged, rewrite it with write_lmdb(..., overwrite=True)") from None
        if not isinstance(meta, dict) or meta.get("format") != FORMAT:
            return None
        return meta

    def _infer_length(self) -> int:
        if self._meta is not None:
            return int(self._meta["length"])
        if self.length_key is not None:
            with self._environment().begin() as txn:
                raw = txn.get(self.length_key)
            if raw is None or not raw.strip().isdigit():
                raise NotADatasetError(
                    f"{self.path!r}: length_key {self.length_key!r} holds {raw!r}, not a "
                    "decimal count; pass length= explicitly")
            return int(raw)
        return int(self._environment().stat()["entries"])

    @property
    def schema(self) -> Optional[dict]:
        """Field -> (kind, dtype) recorded by write_lmdb, or None for foreign LMDBs."""
        return None if self._meta is None else self._meta.get("schema")

    def files(self) -> List[str]:
        """The data files of this source (for page-cache control)."""
        return [os.path.join(self._real, "data.mdb") if self._subdir else self._real]

    # -- protocol -----------------------------------------------------------------
    def __len__(self) -> int:
        return self._length

    def read_many(self, indices: Sequence[int]) -> List[bytes]:
        """Read the raw values of ``indices``, in request order (thread-safe).

        Raises:
            IndexError: an index is negative or >= ``len(self)``.
            CorruptRecordError: a sample's key is missing from the database.
        """
        idx = check_indices(indices, self._length, f"LMDBSource({self.path!r})")
        key_fn = self.key_fn or index_key
        keys = [key_fn(i) for i in idx.tolist()]
        with self._environment().begin(buffers=False) as txn:
            get = txn.get
            out = [get(k) for k in keys]
        if None in out:
            missing = int(idx[out.index(None)])
            raise CorruptRecordError(
                f"{self.path!r}: no record for index {missing} (key "
                f"{keys[out.index(None)]!r}); the database is truncated or key_fn does not "
                "match how it was written")
        return out

    def decode(self, raw: Any) -> Any:
        """Decode one raw value (``decode_fn`` if given, else the record format)."""
        if self.decode_fn is not None:
            return self.decode_fn(raw)
        return records.decode(raw)

    def __repr__(self) -> str:
        return f"LMDBSource({self.path!r}, length={self._length})"


def write_lmdb(path: str, samples: Iterable[Mapping[str, Any]], *,
               overwrite: bool = False, map_size: int = 1 << 26,
               txn_samples: int = 2048, progress: bool = False) -> LMDBSource:
    """Write ``samples`` to a new LMDB at ``path`` and return an :class:`LMDBSource`.

    The environment is written under a temporary name and renamed into place at the end,
    so a failure never leaves a dataset that looks valid.

    Args:
        path: directory to create.
        samples: iterable of dicts ``str -> numpy array | int | float | bool | str |
            bytes`` with the same keys and dtypes in every dict.
        overwrite: replace an existing dataset at ``path``.
        map_size: initial LMDB map size in bytes; doubled automatically when full.
        txn_samples: samples per write transaction.
        progress: show a progress bar.

    Raises:
        DatasetExistsError: ``path`` exists and ``overwrite`` is False.
        SchemaMismatchError: samples disagree on keys or dtypes, or a value is not
            storable.
        ValueError: ``samples`` is empty, or a size argument is not positive.
    """
    if map_size <= 0 or txn_samples <= 0:
        raise ValueError(f"map_size={map_size} and txn_samples={txn_samples} must be > 0")
    final, tmp = prepare_target(path, overwrite)
    checker = SchemaChecker(final)
    env = lmdb.open(tmp, map_size=map_size, subdir=True, lock=True, max_dbs=0)
    count = 0
    try:
        pending: List[tuple] = []
        bar = progress_bar(progress, f"writing {os.path.basename(final)}")
        for sample in samples:
            checker.check(count, sample)
            pending.append((index_key(count), records.encode(sample)))
            count += 1
            if len(pending) >= txn_samples:
                _put_all(env, pending)
                bar.update(len(pending))
                pending = []
        if count == 0:
            raise ValueError(f"no samples given for {final!r}; samples must not be empty")
        meta = {"format": FORMAT, "version": 1, "length": count, "schema": checker.schema}
        pending.append((META_KEY, json.dumps(meta).encode()))
        _put_all(env, pending)
        bar.update(len(pending) - 1)
        bar.close()
        env.sync(True)
    except BaseException:
        env.close()
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    env.close()
    try:  # readers open with lock=False; the writer's lock file is not needed
        os.remove(os.path.join(tmp, "lock.mdb"))
    except FileNotFoundError:
        pass
    finish_dataset(tmp, final)
    return LMDBSource(final)


def _put_all(env: "lmdb.Environment", items: List[tuple]) -> None:
    while True:
        try:
            with env.begin(write=True) as txn:
                for key, value in items:
                    txn.put(key, value)
            return
        except lmdb.MapFullError:
            env.set_mapsize(env.info()["map_size"] * 2)
