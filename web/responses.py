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


class WorkerHealth(BaseModel):
    alive: bool
    last_check: str | None


class Health(BaseModel):
    """``degraded``: Redis answers, a dependency in ``dependencies`` does not."""

    status: Literal["ok", "degraded", "unavailable"]
    redis: Literal["ok", "unreachable"]
    dependencies: dict[str, Literal["ok", "unreachable"]] | None = None
    worker: WorkerHealth | None
    queued: int | None


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
