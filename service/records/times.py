"""Times as the records hold them (ms since the epoch) and as the API shows them (ISO 8601)."""

from __future__ import annotations

import functools
import time
from datetime import UTC, datetime


def now_ms() -> int:
    return int(time.time() * 1000)


def iso_from_ms(ms: int | float | str | bytes | None) -> str | None:
    """``1764633600000`` -> ``"2025-12-02T00:00:00.000+00:00"``; None for no time."""
    if ms is None or ms == b"" or ms == "":
        return None
    second, milli = divmod(int(ms), 1000)
    return f"{_iso_second(second)}.{milli:03d}+00:00"


@functools.lru_cache(maxsize=8)
def _iso_second(second: int) -> str:
    """The date and time of one second: every attempt writes the time it starts and ends, and
    formatting a datetime costs more than the rest of the line (a job's times share seconds)."""
    return datetime.fromtimestamp(second, tz=UTC).isoformat(timespec="seconds")[:-6]
