"""impact-loader: importance-aware caching, substitution and prefetching for PyTorch.

Public names are imported here and listed in ``__all__``; see the README for a tour.
"""

from .errors import (CorruptRecordError, DatasetExistsError, DatasetNotFoundError,
                     ImpactLoaderError, NotADatasetError, PrefetchError,
                     SchemaMismatchError, SourceError)
from .plan import BatchPlan
from .records import decode, encode
from .source import Source

__version__ = "0.1.0"

__all__ = [
    "BatchPlan",
    "CorruptRecordError",
    "DatasetExistsError",
    "DatasetNotFoundError",
    "ImpactLoaderError",
    "NotADatasetError",
    "PrefetchError",
    "SchemaMismatchError",
    "Source",
    "SourceError",
    "decode",
    "encode",
]
