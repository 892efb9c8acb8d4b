"""Times as the records hold them: what datetime writes, worked out once a second."""

from __future__ import annotations

import random
from datetime import UTC, datetime
from zoneinfo import ZoneInfo

import pytest

from service.records import stats
from service.records.times import iso_from_ms


def _datetime_writes(ms: int) -> str:
    seconds, milli = divmod(ms, 1000)
    moment = datetime.fromtimestamp(seconds, tz=UTC).replace(microsecond=milli * 1000)
    return moment.isoformat(timespec="milliseconds")


def test_times_read_as_datetime_writes_them() -> None:
    moments = [0, 1, 999, 1000, -1, -1001, 1_764_633_599_999, 1_764_633_600_000]
    moments += random.Random(17).sample(range(-(10**12), 4 * 10**12), 2000)
    for ms in moments:  # in and out of order: a cached second must never leak into another
        assert iso_from_ms(ms) == _datetime_writes(ms), ms
    assert iso_from_ms(b"1764633600123") == "2025-12-02T00:00:00.123+00:00"
    assert iso_from_ms("1764633600999") == "2025-12-02T00:00:00.999+00:00"
    assert iso_from_ms(None) is None
    assert iso_from_ms(b"") is None


@pytest.mark.parametrize(
    "zone", ["UTC", "Europe/Paris", "America/St_Johns", "Asia/Kathmandu", "Pacific/Chatham"]
)
def test_the_day_a_counter_counts_for_is_found_once_a_second_without_error(zone: str) -> None:
    """records.stats.today keeps each second's date: a zone's day must begin on a whole
    second, including the zones whose offsets are not whole hours."""
    tz = ZoneInfo(zone)
    midnight = datetime(2026, 3, 29, tzinfo=tz).timestamp()  # a DST change in Europe too
    for second in range(int(midnight) - 2, int(midnight) + 3):
        for fraction in (0.0, 0.5, 0.999999):
            expected = datetime.fromtimestamp(second + fraction, tz).date()
            assert stats._day_of(second, tz) == expected, (zone, second, fraction)
