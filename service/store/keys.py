"""Redis key names the service adds beside arq's own."""

from __future__ import annotations

from datetime import date
from typing import Any

PREFIX = "jobsvc:"


def job_meta(job_id: str) -> str:
    """Hash: function, attempts, started_at, finished_at, outcome, last_error, retry_at;
    rate_slot and waiting_for (a send slot booked, service.records.rate_limits);
    replay_of (the job this one replays), replay_kwargs (a replayable job's kept arguments)."""
    return f"{PREFIX}meta:{job_id}"


def daily_stats(day: date) -> str:
    """Hash of counters for one day in the cron time zone, read by the daily report."""
    return f"{PREFIX}stats:{day.isoformat()}"


def job_events(job_id: str, database: int) -> str:
    """Pub/sub channel of one job's state changes and progress, read by the SSE stream;
    ``job_events("*", database)`` is the pattern the live overview subscribes to.

    Pub/sub is server-wide, whatever database a client selected: the channel carries the
    database number (:func:`database_of`), so services sharing one Redis server in different
    databases do not hear each other's jobs."""
    return f"{PREFIX}events:{database}:{job_id}"


def database_of(client: Any) -> int:
    """The database number a Redis client or pipeline works in."""
    return int(client.connection_pool.connection_kwargs.get("db") or 0)


def recent_finished() -> str:
    """List of the latest finished job ids, newest first, capped; the dashboard's history."""
    return f"{PREFIX}recent"


def last_run() -> str:
    """Hash: function name -> id of its latest finished run (cron schedules show it)."""
    return f"{PREFIX}last-run"


def wake(queue_name: str) -> str:
    """List holding at most one token: pushed when a job is queued, popped by an idle worker."""
    return f"{PREFIX}wake:{queue_name}"


def paused(queue_name: str) -> str:
    """String holding when the queue was paused (ms), present only while it is: the claim
    script reads it, so no worker takes a job from the queue meanwhile."""
    return f"{PREFIX}paused:{queue_name}"


def paused_schedules() -> str:
    """Hash: cron name ("cron:daily_report") -> when it was paused (ms); a paused schedule's
    runs are skipped by every worker (service.worker.schedules)."""
    return f"{PREFIX}cron-paused"


def schedule_runs(cron_name: str) -> str:
    """List of a schedule's latest runs (JSON each: outcome, times, duration), newest first."""
    return f"{PREFIX}cron-runs:{cron_name}"


def schedule_run_seen(run_id: str) -> str:
    """Marker that a schedule's run for one due time started (its arq job id,
    "cron:<job>:<due ms>"), so a worker catching up missed runs does not run it again."""
    return f"{PREFIX}cron-seen:{run_id}"


def job_attempts(job_id: str) -> str:
    """List of one job's finished attempts (JSON each), oldest first, capped in length."""
    return f"{PREFIX}attempts:{job_id}"


def job_replays(job_id: str) -> str:
    """List of the ids of a job's replays (POST /jobs/{id}/replay), newest first, capped."""
    return f"{PREFIX}replays:{job_id}"


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


def breaker(destination: str) -> str:
    """Hash of one destination's circuit breaker (state, failures, opened_at, next_probe,
    cooldown, probe, probe_until), present only while it has something to remember."""
    return f"{PREFIX}breaker:{destination}"


def breaker_waiting(destination: str) -> str:
    """Set of the ids of jobs a destination's open breaker sent back to the queue: made due
    at once when it closes; expires with the breaker."""
    return f"{PREFIX}breaker-waiting:{destination}"


def breakers() -> str:
    """Sorted set of the destinations whose breakers are tracked (score: last failure, ms)."""
    return f"{PREFIX}breakers"


def rate_window(scope: str, amount: int, period_ms: int, part: str) -> str:
    """One rate-limit window's records for ``scope`` ("email", "webhook:<host>"), by ``part``
    (service.records.rate_limits): "slots", the list of send times handed out, oldest first,
    at most ``amount`` long; "sending", the sorted set of sends under way (scored by when
    their lease ends); "sent", the sorted set of sends that ended within the last period
    (scored by when). A changed limit starts records of its own."""
    return f"{PREFIX}rate:{scope}:{amount}/{period_ms}:{part}"


def rate_tokens(scope: str) -> str:
    """Counter naming each send of ``scope`` in its windows' "sending" and "sent" sets."""
    return f"{PREFIX}rate:{scope}:n"


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


def throughput_seconds(minute: int) -> str:
    """Hash of one minute's jobs finished per second (``<second>c`` completed, ``<second>f``
    failed), minutes since the epoch; the overview's live graph, kept a few minutes."""
    return f"{PREFIX}tp:s:{minute}"


def throughput_minutes(hour: int) -> str:
    """Hash of one hour's jobs finished per minute (``<minute>c``, ``<minute>f``), hours since
    the epoch; the 24-hour graph."""
    return f"{PREFIX}tp:m:{hour}"


def throughput_hours(day: int) -> str:
    """Hash of one UTC day's jobs finished per hour (``<hour>c``, ``<hour>f``), days since the
    epoch; the 30-day graph."""
    return f"{PREFIX}tp:h:{day}"


def function_minute(function: str, minute: int) -> str:
    """Hash of one function's attempts in one minute: counts by outcome and latency buckets
    (service.records.function_stats), minutes since the epoch; kept a little over an hour."""
    return f"{PREFIX}fn:{function}:{minute}"
