"""A report day for tests that need any valid one: recent enough for REPORT_MAX_AGE_DAYS
(400 by default) whenever the suite runs, unlike a date written into the test."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

RECENT_DAY = (datetime.now(UTC).date() - timedelta(days=10)).isoformat()
