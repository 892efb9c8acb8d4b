"""Exponential backoff with jitter, so retries of many failed jobs do not stampede together."""

from __future__ import annotations

import random


def backoff_delay(attempt: int, *, base: float, cap: float) -> float:
    """Seconds to wait after failed attempt ``attempt`` (1-based).

    "Equal jitter": half the exponential step is fixed, so delays always grow, and half is
    random, so jobs that failed together retry apart.
    """
    step = min(cap, base * 2 ** max(attempt - 1, 0))
    return float(step / 2 + random.uniform(0, step / 2))
