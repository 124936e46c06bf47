"""impact-loader: importance-aware caching, substitution and prefetching for PyTorch.

Public names are imported here and listed in ``__all__``; see the README for a tour.
"""

from .arrow_source import ArrowSource, write_arrow
from .collate import InlineCollate
from .errors import (CorruptRecordError, DatasetExistsError, DatasetNotFoundError,
                     ImpactLoaderError, NotADatasetError, PortInUseError, PrefetchError,
                     SchemaMismatchError, SourceError)
from .dataset import ImpactDataset
from .loader import ImpactLoader
from .lmdb_source import AsciiKeys, LMDBSource, write_lmdb
from . import metrics
from .pagecache import evict_page_cache, resident_bytes
from .plan import BatchPlan
from .records import decode, encode
from .sampler import ImportanceSampler
from .sampling import SamplingConfig
from .source import Source
from .throttle import PROFILES, StorageProfile, ThrottledSource

__version__ = "0.1.0"

__all__ = [
    "ArrowSource",
    "AsciiKeys",
    "BatchPlan",
    "CorruptRecordError",
    "DatasetExistsError",
    "DatasetNotFoundError",
    "ImpactDataset",
    "ImpactLoader",
    "ImpactLoaderError",
    "ImportanceSampler",
    "InlineCollate",
    "LMDBSource",
    "NotADatasetError",
    "PROFILES",
    "PortInUseError",
    "PrefetchError",
    "SamplingConfig",
    "SchemaMismatchError",
    "Source",
    "SourceError",
    "StorageProfile",
    "ThrottledSource",
    "decode",
    "encode",
    "evict_page_cache",
    "metrics",
    "resident_bytes",
    "write_arrow",
    "write_lmdb",
]
