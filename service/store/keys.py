"""Redis key names the service adds beside arq's own."""

from __future__ import annotations

from datetime import date

PREFIX = "jobsvc:"


def job_meta(job_id: str) -> str:
    """Hash: function, attempts, started_at, finished_at, outcome, last_error, retry_at."""
    return f"{PREFIX}meta:{job_id}"


def daily_stats(day: date) -> str:
    """Hash of counters for one day in the cron time zone, read by the daily report."""
    return f"{PREFIX}stats:{day.isoformat()}"


def job_events(job_id: str) -> str:
    """Pub/sub channel of one job's state changes and progress, read by the SSE stream;
    ``job_events("*")`` is the pattern the live overview subscribes to."""
    return f"{PREFIX}events:{job_id}"


def recent_finished() -> str:
    """List of the latest finished job ids, newest first, capped; the dashboard's history."""
    return f"{PREFIX}recent"


def last_run() -> str:
    """Hash: function name -> id of its latest finished run (cron schedules show it)."""
    return f"{PREFIX}last-run"


def wake(queue_name: str) -> str:
    """List holding at most one token: pushed when a job is queued, popped by an idle worker."""
    return f"{PREFIX}wake:{queue_name}"


def job_attempts(job_id: str) -> str:
    """List of one job's finished attempts (JSON each), oldest first, capped in length."""
    return f"{PREFIX}attempts:{job_id}"


def dead_letters() -> str:
    """Sorted set: id of every job that failed for good, scored by when (ms)."""
    return f"{PREFIX}dead"


def dead_letter_entries() -> str:
    """Hash: job id -> JSON of the failed job (function, arguments, attempts, reason)."""
    return f"{PREFIX}dead:jobs"


def dead_letter_expected() -> str:
    """Hash: job id -> JSON entry, for jobs on their last attempt: should the worker die, arq
    fails the job without running any of our code, and the list picks it up from here."""
    return f"{PREFIX}dead:expected"


def search_index(kind: str = "all", value: str = "") -> str:
    """Sorted set of "<job id> <function>" scored by enqueue time (ms), for job search: every
    job (``"all"``), one function's (``"fn"``, name) or one business key's (``"key"``, key)."""
    return f"{PREFIX}ix:{kind}" if kind == "all" else f"{PREFIX}ix:{kind}:{value}"


def idempotency(scope: str, key_digest: str) -> str:
    """A client's Idempotency-Key (hashed), scoped to its API token, -> the job it made."""
    return f"{PREFIX}idem:{scope}:{key_digest}"


def worker_record(name: str) -> str:
    """A worker's start-up record (max_jobs, started_at), beside its arq health-check key."""
    return f"{PREFIX}worker:{name}"


def session(digest: str) -> str:
    """Hash of one dashboard session, keyed by the SHA-256 of its cookie value."""
    return f"{PREFIX}session:{digest}"


def workers() -> str:
    """Sorted set of worker names (score: last seen alive), read with their health keys."""
    return f"{PREFIX}workers"


def running() -> str:
    """Sorted set of job ids being run (score: start, ms); arq's in-progress keys confirm it."""
    return f"{PREFIX}running"


def job_key(*parts: str | int) -> str:
    """A key of a job's own (a "sent" marker, a lock): ``job_key("sent", job_id)`` is
    ``jobsvc:sent:<job_id>``. Jobs name their keys here, beside the service's own."""
    return PREFIX + ":".join(str(part) for part in parts)


CRON_PREFIX = "cron:"


def cron_name(job_name: str) -> str:
    """arq's name for a job's cron schedule, which its runs are stored under: "cron:<job>"."""
    return CRON_PREFIX + job_name


def job_of_cron(name: str) -> str:
    """The job a stored function name runs: "cron:daily_report" -> "daily_report"."""
    return name.removeprefix(CRON_PREFIX)
