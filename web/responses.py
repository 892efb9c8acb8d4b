"""The shapes of the API's JSON answers, as pydantic models for the OpenAPI description.

Handlers build their answers as plain dicts; these models only describe them. The schemathesis
test (tests/test_openapi.py) checks live answers against these schemas, so a drift between a
handler and its description fails the suite.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

TaskState = Literal["PENDING", "STARTED", "RETRY", "SUCCESS", "FAILURE", "CANCELLED"]


class ErrorAnswer(BaseModel):
    """Every 4xx and 503: what went wrong, in one sentence."""

    error: str


class Accepted(BaseModel):
    """A job was queued; follow ``Location`` (or ``/task-status/{task_id}``) for its status."""

    message: str | None = None
    task_id: str


class ReplayAccepted(BaseModel):
    """A replay was queued as a new job; ``replay_of`` is the job it re-sends."""

    message: str
    task_id: str
    replay_of: str


class Registered(BaseModel):
    id: int
    name: str
    email: str
    task_id: str


class TaskStatus(BaseModel):
    """A job's status; fields beyond ``task_id`` and ``status`` depend on the state."""

    task_id: str
    status: TaskState | None = None
    function: str | None = None
    attempts: int | None = None
    max_tries: int | None = None
    enqueued_at: str | None = None
    started_at: str | None = None
    finished_at: str | None = None
    result: Any = None
    error: str | None = None
    next_attempt_at: str | None = None
    scheduled_for: str | None = None
    history: list[dict[str, Any]] | None = None
    replay_of: str | None = None  # the job this one re-sends (POST /jobs/{id}/replay)
    replays: list[str] | None = None  # this job's replays, newest first
    # what a job put back in the queue before it started waits for: its destination's
    # circuit breaker ("webhook host example.com (circuit breaker open)") or a rate limit
    # ("rate limit (EMAIL_RATE_LIMIT)")
    waiting_for: str | None = None


class WorkerHealth(BaseModel):
    alive: bool
    last_check: str | None


class JobCounts(BaseModel):
    """The queue's jobs: due and waiting for a worker, due later, and running now."""

    waiting: int
    deferred: int
    running: int


class BreakerState(BaseModel):
    """A destination's circuit breaker: ``open`` (its jobs wait until ``next_probe_at``),
    ``half_open`` (one probe job is running) or ``closed`` (failures counted, below
    BREAKER_FAILURES)."""

    destination: str  # "webhook:<host>" or "smtp"
    label: str  # what a person reads: "webhook host example.com"
    state: Literal["closed", "open", "half_open"]
    failures: int
    opened_at: str | None
    next_probe_at: str | None
    cooldown_seconds: float | None


class BreakerList(BaseModel):
    breakers: list[BreakerState]


class BreakerClosed(BaseModel):
    destination: str
    label: str
    state: Literal["closed"]


class Health(BaseModel):
    """``degraded``: Redis answers, a dependency in ``dependencies`` does not."""

    status: Literal["ok", "degraded", "unavailable"]
    redis: Literal["ok", "unreachable"]
    dependencies: dict[str, Literal["ok", "unreachable"]] | None = None
    worker: WorkerHealth | None
    queued: int | None  # waiting + deferred: in the queue, not running
    jobs: JobCounts | None = None
    paused: bool | None = None  # the queue is paused (POST /queue/pause): no job is taken
    paused_at: str | None = None
    # destinations whose circuit breakers hold their jobs back: listed, not unhealthy
    open_breakers: list[BreakerState] | None = None


class QueueState(BaseModel):
    """The queue as a whole: paused or not, jobs running, jobs queued (waiting + deferred);
    ``drained`` only from ``POST /queue/drain``."""

    paused: bool
    paused_at: str | None
    running: int
    queued: int
    drained: bool | None = None


class CronRun(BaseModel):
    """One run of a schedule; ``skipped``: the schedule was paused at its time."""

    job_id: str
    outcome: Literal["success", "failure", "retry", "interrupted", "skipped"]
    started_at: str | None
    finished_at: str | None
    duration_ms: int
    error: str | None


class CronState(BaseModel):
    """A schedule: paused or not, its next five times (in CRON_TIMEZONE, with their offsets)
    and its latest twenty runs, newest first."""

    name: str
    function: str
    paused: bool
    paused_at: str | None
    next_runs: list[str]
    last_runs: list[CronRun]


class CronList(BaseModel):
    timezone: str
    crons: list[CronState]


class FailedJob(BaseModel):
    # the field is "kwargs" on the wire; by name, the model's own __init__ can take it
    model_config = ConfigDict(populate_by_name=True)

    task_id: str
    function: str
    args: list[Any]  # secret-looking values masked
    keyword_args: dict[str, Any] = Field(alias="kwargs")
    # too large to keep whole (DEAD_LETTER_MAX_ARGUMENT_BYTES): a cut copy, not retried
    arguments_truncated: bool
    attempts: int
    error: str
    failed_at: str | None
    enqueued_at: str | None


class FailedJobsPage(BaseModel):
    jobs: list[FailedJob]
    total: int
    offset: int
    limit: int
    next: str | None


class Throughput(BaseModel):
    """Jobs finished per ``step`` seconds from ``start`` (seconds since the epoch), oldest
    first; the last step is the current one, still counting."""

    range: Literal["5m", "24h", "30d"]
    step: int
    start: int
    completed: list[int]
    failed: list[int]


class FunctionFigures(BaseModel):
    """One function's last hour; latencies in seconds, null when nothing was timed."""

    function: str
    jobs: int  # finished: succeeded + failed for good
    succeeded: int
    failed: int
    retried: int  # attempts that failed and will run again
    failure_rate: float | None
    duration_p50: float | None
    duration_p95: float | None
    wait_p95: float | None  # from when the attempt was due to its start


class FunctionsStats(BaseModel):
    window: int  # seconds
    relative_error: float  # the latencies' bound, above or below (service.records.latency)
    functions: list[FunctionFigures]


JobState = Literal["waiting", "deferred", "running", "retrying", "succeeded", "failed", "cancelled"]


class FoundJob(BaseModel):
    task_id: str
    function: str
    state: JobState
    enqueued_at: str | None


class SearchResults(BaseModel):
    """One page of a search, newest first; ``next`` goes on from where it stopped."""

    jobs: list[FoundJob]
    limit: int
    examined: int  # index entries looked at for this page (at most 5000)
    next: str | None


class SkippedJob(BaseModel):
    task_id: str
    reason: str


class BulkResult(BaseModel):
    """What a bulk action did: each matched job is either done or skipped, with why."""

    action: Literal["retry", "cancel", "delete"]
    matched: int
    more: bool  # more jobs match than one call acts on (BULK_MAX_JOBS): send it again
    done: list[str]
    skipped: list[SkippedJob]


class CountChanged(BaseModel):
    """The search no longer matches the confirmed count: nothing was done."""

    error: str
    count: int
