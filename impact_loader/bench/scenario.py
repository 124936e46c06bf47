"""What one impact-bench run measures: the scenario's parameters and its storage.

The defaults are the built-in scenario ``impact-bench`` runs with no arguments: the
reference I/O-bound scenario of the end-to-end issue (8 KiB records, a modest network
file system at 4 ms / 100 MB/s / 8 requests in flight, cache 20% of the data, batch
128, 2 workers, 10 ms of accelerator time per step) on fewer samples and epochs, so
that it finishes in about 3 minutes on a 2-core machine.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional, Tuple

from ..throttle import PROFILES

__all__ = ["Scenario", "STORAGE_CHOICES", "Storage"]

# Named emulation profiles, plus real reads of warm ("local") or cold local files.
STORAGE_CHOICES = tuple(PROFILES) + ("local", "cold")


@dataclass(frozen=True)
class Storage:
    """How the benchmark reaches the data.

    Attributes:
        name: a profile name, ``"local"`` or ``"cold"``.
        latency_ms / bandwidth_mb_s / inflight: the emulated storage's figures; ``None``
            for real reads (``local``, ``cold``).
        cold: drop the data's pages from the page cache before every epoch.
    """

    name: str
    latency_ms: Optional[float] = None
    bandwidth_mb_s: Optional[float] = None
    inflight: Optional[int] = None
    cold: bool = False

    @property
    def throttled(self) -> bool:
        """Whether reads go through an emulated (throttled) link."""
        return self.latency_ms is not None

    @classmethod
    def named(cls, name: str, *, latency_ms: Optional[float] = None,
              bandwidth_mb_s: Optional[float] = None,
              inflight: Optional[int] = None) -> "Storage":
        """The storage called ``name``; explicit figures override a profile's.

        Raises:
            ValueError: unknown name, or figures given for real (local/cold) storage.
        """
        if name in ("local", "cold"):
            if any(v is not None for v in (latency_ms, bandwidth_mb_s, inflight)):
                raise ValueError(f"storage {name!r} reads the real files; --latency-ms, "
                                 "--bandwidth-mb-s and --inflight only apply to an "
                                 f"emulated profile ({', '.join(PROFILES)})")
            return cls(name, cold=name == "cold")
        if name not in PROFILES:
            raise ValueError(f"storage {name!r} is unknown; choose one of "
                             f"{', '.join(STORAGE_CHOICES)}")
        p = PROFILES[name]
        return cls(name,
                   latency_ms=p.latency_ms if latency_ms is None else latency_ms,
                   bandwidth_mb_s=p.bandwidth_mb_s if bandwidth_mb_s is None
                   else bandwidth_mb_s,
                   inflight=p.max_inflight if inflight is None else inflight)

    def describe(self) -> str:
        """One line for reports."""
        if not self.throttled:
            return ("real reads, page cache dropped before each epoch" if self.cold
                    else "real reads, warm page cache")
        return (f"emulated '{self.name}': {self.latency_ms:g} ms per request, "
                f"{self.bandwidth_mb_s:g} MB/s, {self.inflight} requests in flight")


@dataclass(frozen=True)
class Scenario:
    """Parameters of one benchmark run (see ``impact-bench --help`` for each).

    Attributes:
        loaders: loader names, see :data:`impact_loader.bench.loaders.LOADERS`.
        storage: how the data is reached.
        cache_fractions: cache size(s) as a share of the dataset's bytes; several
            values sweep them, each one a full side-by-side comparison.
        source: path of the user's LMDB or Arrow data; ``None`` for the built-in task.
        samples / record_bytes / test_samples: size of the built-in dataset.
        epochs: epochs per loader; ``warmup`` leading ones are not measured.
        batch_size / workers / start_method: the DataLoader's.
        compute_ms: milliseconds per step standing in for the accelerator.
        seed: seeds data, models and samplers alike.
        sampler_warmup_epochs / staging_mib: override impact-loader defaults.
        data_dir: where the built-in dataset is written once and reused.
    """

    loaders: Tuple[str, ...]
    storage: Storage = field(default_factory=lambda: Storage.named("nfs"))
    cache_fractions: Tuple[float, ...] = (0.2,)
    source: Optional[str] = None
    samples: int = 4000
    record_bytes: int = 8192
    test_samples: int = 1000
    epochs: int = 5
    warmup: int = 1
    batch_size: int = 128
    workers: int = 2
    start_method: str = "fork"
    compute_ms: float = 10.0
    seed: int = 0
    sampler_warmup_epochs: Optional[int] = None
    staging_mib: Optional[float] = None
    data_dir: Optional[str] = None
