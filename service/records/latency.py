"""Latencies as fixed logarithmic buckets, and percentiles read back from bucket counts.

A per-function, per-minute record of every attempt's duration and queue wait must stay small
whatever the traffic, so each latency is kept only as the number of its bucket: bucket ``b``
holds the values in ``(2^((b-1)/4), 2^(b/4)]`` microseconds (bucket 0 is everything up to
1 us). Four buckets per doubling cover a microsecond to a day in under 150 buckets, and a
busy function uses a handful. A percentile is the bucket of the nearest rank, reported as its
geometric middle, so it is off from the true value by at most 2^(1/8) - 1, about 9%, above
or below.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

PER_DOUBLING = 4
MAX_BUCKET = 4 * 37  # 2^37 us is about 38 hours: longer is counted as that
RELATIVE_ERROR = 2 ** (1 / (2 * PER_DOUBLING)) - 1  # about 0.09


def bucket(seconds: float) -> int:
    """The bucket of a latency of ``seconds``."""
    micros = seconds * 1e6
    if micros <= 1:
        return 0
    return min(math.ceil(math.log2(micros) * PER_DOUBLING - 1e-9), MAX_BUCKET)


def middle(index: int) -> float:
    """What bucket ``index`` reports, in seconds: its geometric middle (0 for bucket 0)."""
    if index <= 0:
        return 0.0
    return float(2 ** ((index - 0.5) / PER_DOUBLING) / 1e6)


def percentile(counts: Mapping[int, int], fraction: float) -> float | None:
    """The ``fraction`` percentile (0.95 for p95) of the latencies counted per bucket, by
    nearest rank; None when nothing was counted."""
    total = sum(counts.values())
    if total <= 0:
        return None
    rank = max(1, math.ceil(fraction * total))
    seen = 0
    for index in sorted(counts):
        seen += counts[index]
        if seen >= rank:
            return middle(index)
    return middle(max(counts))  # unreachable: the ranks add up to total
