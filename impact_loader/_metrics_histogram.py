"""Fixed-bucket latency histograms counted with plain integer increments.

The hot paths (a prefetch read, a batch handed to the training loop, a worker's storage
read) only find a bucket and add one; the Prometheus exporter turns the counts into
cumulative ``le`` buckets at scrape time. No prometheus-client call happens on a hot
path, and the counts need no lock beyond the one their owner already holds.
"""

from __future__ import annotations

from bisect import bisect_left
from typing import List, Sequence, Tuple

__all__ = ["BUCKETS", "Histogram", "bucket_of", "cumulative"]

# Upper bounds in seconds, from a page-cache hit (~100 us) to a stalled request (10 s).
# Counts have one more slot than bounds: the last one is +Inf.
BUCKETS: Tuple[float, ...] = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01,
                              0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


def bucket_of(seconds: float) -> int:
    """Index of the bucket counting ``seconds`` (Prometheus ``le``: value <= bound)."""
    return bisect_left(BUCKETS, seconds)


def cumulative(counts: Sequence[int], sum_seconds: float) -> Tuple[List[Tuple[str, int]],
                                                                   float]:
    """Per-bucket counts as Prometheus cumulative ``(le, count)`` pairs and their sum.

    Args:
        counts: ``len(BUCKETS) + 1`` counts, the last one for values above every bound.
        sum_seconds: sum of the observed values, in seconds.

    Returns:
        ``([(le, cumulative_count), ..., ("+Inf", total)], sum_seconds)``.
    """
    out, running = [], 0
    for bound, n in zip(BUCKETS + (float("inf"),), counts):
        running += int(n)
        out.append(("+Inf" if bound == float("inf") else repr(bound), running))
    return out, float(sum_seconds)


class Histogram:
    """Observation counts in :data:`BUCKETS` plus their sum, in seconds.

    Not locked: an owner that observes from several threads calls :meth:`observe`
    under the lock it already holds. A snapshot taken from another thread may lag by
    an observation, which Prometheus tolerates (the count is derived from the buckets,
    so buckets and count always agree).
    """

    __slots__ = ("counts", "sum")

    def __init__(self) -> None:
        self.counts: List[int] = [0] * (len(BUCKETS) + 1)
        self.sum = 0.0

    def observe(self, seconds: float) -> None:
        """Count one observation of ``seconds``."""
        self.counts[bisect_left(BUCKETS, seconds)] += 1
        self.sum += seconds

    @property
    def count(self) -> int:
        """Number of observations."""
        return sum(self.counts)

    def snapshot(self) -> Tuple[List[Tuple[str, int]], float]:
        """Cumulative ``(le, count)`` buckets and the sum (see :func:`cumulative`)."""
        return cumulative(list(self.counts), self.sum)
