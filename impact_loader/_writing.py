"""Helpers every dataset writer shares: target checks, schema checks, atomic finish."""

from __future__ import annotations

import os
import shutil
import uuid
from typing import Any, Mapping, Optional, Tuple

from .errors import DatasetExistsError, SchemaMismatchError
from .records import schema_of

__all__ = ["prepare_target", "finish_dataset", "SchemaChecker", "progress_bar"]


def prepare_target(path: str, overwrite: bool) -> Tuple[str, str]:
    """Check ``path`` may be written; return (final path, temporary sibling path).

    Raises:
        DatasetExistsError: ``path`` exists and ``overwrite`` is False.
    """
    final = os.path.abspath(os.fspath(path))
    if os.path.lexists(final) and not overwrite:
        raise DatasetExistsError(
            f"{final!r} already exists; pass overwrite=True to replace it or choose "
            "another path")
    parent = os.path.dirname(final)
    os.makedirs(parent, exist_ok=True)
    tmp = os.path.join(parent, f".{os.path.basename(final)}.tmp-{uuid.uuid4().hex[:8]}")
    return final, tmp


def finish_dataset(tmp: str, final: str) -> None:
    """Move a fully written dataset from ``tmp`` into place, replacing any old one."""
    old = None
    if os.path.lexists(final):
        old = f"{tmp}.old"
        os.rename(final, old)
    os.rename(tmp, final)
    if old is not None:
        if os.path.isdir(old) and not os.path.islink(old):
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.remove(old)


class SchemaChecker:
    """Checks that every sample written shares the first sample's keys, kinds and dtypes."""

    def __init__(self, where: str) -> None:
        self.where = where
        self.schema: Optional[dict] = None

    def check(self, number: int, sample: Mapping[str, Any]) -> None:
        """Raise SchemaMismatchError naming sample ``number`` and the field if it differs."""
        got = schema_of(sample)
        if self.schema is None:
            self.schema = got
            return
        if got.keys() != self.schema.keys():
            extra = sorted(set(got) - set(self.schema))
            missing = sorted(set(self.schema) - set(got))
            raise SchemaMismatchError(
                f"{self.where}: sample {number} has keys {sorted(got)}, sample 0 has "
                f"{sorted(self.schema)} (extra {extra}, missing {missing}); every sample "
                "needs the same keys")
        for key, want in self.schema.items():
            if got[key] != want:
                raise SchemaMismatchError(
                    f"{self.where}: sample {number} field {key!r} is {got[key][0]} "
                    f"{got[key][1]}, sample 0 has {want[0]} {want[1]}; cast it to match")


class _NoBar:
    def update(self, n: int = 1) -> None:
        pass

    def close(self) -> None:
        pass


def progress_bar(enabled: bool, desc: str, total: Optional[int] = None) -> Any:
    """A tqdm bar when ``enabled``, else an object with the same no-op methods."""
    if not enabled:
        return _NoBar()
    from tqdm.auto import tqdm
    return tqdm(total=total, desc=desc, unit="sample", dynamic_ncols=True)
