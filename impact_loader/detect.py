"""Open a dataset path of unknown format: LMDB environment or Arrow shards."""

from __future__ import annotations

import glob
import os
from typing import Any

from .errors import DatasetNotFoundError, NotADatasetError

__all__ = ["detect_format", "open_source"]

_ARROW_SUFFIXES = (".arrow", ".feather", ".ipc")


def detect_format(path: str) -> str:
    """Return ``"lmdb"`` or ``"arrow"`` for ``path``.

    Raises:
        DatasetNotFoundError: nothing exists at ``path`` (and it is not a glob).
        NotADatasetError: it exists but is neither format.
    """
    path = os.fspath(path)
    if any(ch in path for ch in "*?[") and glob.glob(path):
        return "arrow"
    if not os.path.exists(path):
        raise DatasetNotFoundError(f"dataset {path!r} does not exist; check the path")
    if os.path.isdir(path):
        if os.path.isfile(os.path.join(path, "data.mdb")):
            return "lmdb"
        if any(n.endswith(_ARROW_SUFFIXES) for n in os.listdir(path)):
            return "arrow"
        raise NotADatasetError(
            f"{path!r} holds neither an LMDB (data.mdb) nor Arrow shards (*.arrow); "
            "convert your data with `impact-loader convert`")
    with open(path, "rb") as fh:
        head = fh.read(8)
    if path.endswith(_ARROW_SUFFIXES) or head[:6] == b"ARROW1" or head[:4] == b"\xff\xff\xff\xff":
        return "arrow"
    if path.endswith((".mdb", ".lmdb")):
        return "lmdb"
    raise NotADatasetError(
        f"{path!r} is neither an LMDB file nor an Arrow IPC file; convert it with "
        "`impact-loader convert`")


def open_source(path: str, **options: Any) -> Any:
    """Open ``path`` as an :class:`LMDBSource` or :class:`ArrowSource`, by its format."""
    if detect_format(path) == "lmdb":
        from .lmdb_source import LMDBSource
        return LMDBSource(path, **options)
    from .arrow_source import ArrowSource
    return ArrowSource(path, **options)
