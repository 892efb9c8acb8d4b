"""Times as the records hold them (ms since the epoch) and as the API shows them (ISO 8601)."""

from __future__ import annotations

import time
from datetime import UTC, datetime


def now_ms() -> int:
    return int(time.time() * 1000)


def iso_from_ms(ms: int | float | str | bytes | None) -> str | None:
    """``1764633600000`` -> ``"2025-12-02T00:00:00.000+00:00"``; None for no time."""
    if ms is None or ms == b"" or ms == "":
        return None
    moment = datetime.fromtimestamp(int(ms) / 1000, tz=UTC)
    return moment.isoformat(timespec="milliseconds")
