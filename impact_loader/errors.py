"""Every exception type impact-loader raises on purpose.

Each subclasses the built-in exception that fits, so callers that already catch
``OSError`` or ``ValueError`` keep working; messages name the offending value and the fix.
"""

from __future__ import annotations

__all__ = [
    "ImpactLoaderError",
    "SourceError",
    "DatasetNotFoundError",
    "NotADatasetError",
    "CorruptRecordError",
    "SchemaMismatchError",
    "DatasetExistsError",
    "PrefetchError",
    "PortInUseError",
]


class ImpactLoaderError(Exception):
    """Base class of every impact-loader error (mixed into the built-in it extends)."""


class SourceError(ImpactLoaderError, OSError):
    """Storage could not be opened or read (missing file, I/O failure, bad layout)."""


class DatasetNotFoundError(SourceError, FileNotFoundError):
    """The path given for a dataset does not exist."""


class NotADatasetError(SourceError):
    """The path exists but holds no LMDB or Arrow dataset impact-loader can read."""


class CorruptRecordError(ImpactLoaderError, ValueError):
    """A stored record is truncated or its bytes do not decode."""


class SchemaMismatchError(ImpactLoaderError, ValueError):
    """Samples written to one dataset disagree on keys, types or dtypes."""


class DatasetExistsError(ImpactLoaderError, FileExistsError):
    """Writing would replace an existing dataset and ``overwrite=True`` was not given."""


class PrefetchError(ImpactLoaderError, RuntimeError):
    """A background prefetch thread failed; raised in the training loop with its cause."""


class PortInUseError(ImpactLoaderError, OSError):
    """The metrics server could not bind its port (``errno`` is ``EADDRINUSE``)."""
