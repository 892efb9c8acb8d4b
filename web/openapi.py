"""``GET /openapi.json``: the API's OpenAPI 3.1 description, built from the routes themselves.

Each route has one :class:`Operation` entry in :data:`OPERATIONS`; body schemas come from the
pydantic models (``model_json_schema``), never written by hand. What every operation shares is
added by rule: the bearer-token answers (401, 403, 429) wherever ``web.auth`` asks for a token,
and 503 wherever Redis is needed. tests/test_openapi.py fails when a route has no entry, and
runs schemathesis against the live app so the description and the behaviour cannot drift.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web
from pydantic import BaseModel
from pydantic.json_schema import models_json_schema

from service.engine.queues import PRIORITIES
from service.records.breakers import DESTINATION_PATTERN
from service.records.status import JOB_ID_PATTERN
from service.runtime import Registry
from web import queue_control, responses, schemas
from web.auth import is_public
from web.keys import OPENAPI, REGISTRY
from web.schemas import api_request_model, request_model
from web.sessions import accepts_session

TITLE = "jobservice"
VERSION = "0.1.0"
REF_TEMPLATE = "#/components/schemas/{model}"


@dataclass(frozen=True, slots=True)
class Answer:
    """One documented status: its meaning, and the JSON model or media type of its body."""

    description: str
    model: type[BaseModel] | None = None
    media: str | None = "application/json"  # None: no body
    schema: Mapping[str, Any] | None = None  # for non-JSON bodies (text, event streams)
    headers: tuple[str, ...] = ()  # e.g. ("Location",)
    also: tuple[str, ...] = ()  # other media types some answers with this status have


@dataclass(frozen=True, slots=True)
class Operation:
    """What one route does, what it takes and what it answers."""

    summary: str
    answers: Mapping[int, Answer]
    body: type[BaseModel] | None = None
    job: str | None = None  # the body is this registered job's input (+ run_at, delay)
    any_job: bool = False  # the body names any job the API may queue (POST /jobs)
    body_required: bool = True
    multipart: Mapping[str, Any] | None = None  # form fields, for uploads
    form: Mapping[str, Any] | None = None  # urlencoded form fields, for the dashboard
    path_params: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    query: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    uses_redis: bool = True
    idempotent: bool = False  # wrapped in web.idempotency.idempotent: takes Idempotency-Key
    tags: tuple[str, ...] = ()


def _error(description: str) -> Answer:
    return Answer(description, responses.ErrorAnswer)


TOO_MANY_STREAMS = _error(
    "too many live streams open for this token or this process, or over a rate limit: "
    "wait Retry-After seconds"
)


def _queued(what: str) -> Answer:
    return Answer(
        f"{what} queued; its status is at the Location", responses.Accepted, headers=("Location",)
    )


BAD_BODY = _error("the body is not valid JSON, not an object, or a field is missing or invalid")
TOO_LARGE = _error("the body is larger than the limit (a job's own payload limit, else 1 MiB)")
NO_SUCH_TASK = _error("no task with this id")
PAGE = Answer("an HTML page", media="text/html", schema={"type": "string"})
SEE_OTHER = Answer("done: the browser goes on to the Location", media=None, headers=("Location",))
TASK_ID = {"type": "string", "pattern": f"^{JOB_ID_PATTERN.pattern}$"}
JOB_ID_NAMES = {"task_id", "job_id"}
PLAIN_NAME = {"type": "string", "pattern": "^[A-Za-z0-9:_.-]{1,200}$"}  # one path segment
NO_MATCH = _error("nothing has this name or id")
NO_CRON = _error("no cron schedule has this name")
NO_BREAKER = _error("no circuit breaker is open for this destination")
DESTINATION = {"type": "string", "pattern": f"^{DESTINATION_PATTERN.pattern}$"}
SEARCH_FILTERS: dict[str, Mapping[str, Any]] = {
    "function": {"type": "string", "description": "a declared job's name"},
    "state": {
        "type": "string",
        "description": "one or more, comma-separated: waiting, deferred, running, retrying,"
        " succeeded, failed, cancelled",
    },
    "key": {"type": "string", "description": "a business key: an address, user:<id>, a host"},
    "prefix": {"type": "string", "pattern": "^[A-Za-z0-9:_.-]{1,200}$"},
    "since": {"type": "string", "format": "date-time"},
    "until": {"type": "string", "format": "date-time"},
}
# the search page's form sends every field, an empty one meaning no filter
FORM_FILTERS = {
    name: {"type": "string", "description": "as GET /jobs; empty: any"} for name in SEARCH_FILTERS
}
UPLOAD_ANSWERS: Mapping[int, Answer] = {
    202: _queued("the thumbnail job"),
    400: _error("not multipart/form-data, no 'file' field, or an empty file"),
    413: _error("the file, or its pixel count, is over the limit"),
    415: _error("not a JPEG, PNG, GIF or WebP image"),
}
UPLOAD_FORM = {"file": {"type": "string", "format": "binary"}}
# every route that queues a job takes it (README "Priorities and queues")
PRIORITY = {
    "priority": {
        "type": "string",
        "enum": list(PRIORITIES),
        "description": "the job's priority; default: its declaration's (normal)",
    }
}


def _json_job(summary: str, queued: str, job: str, *, body_required: bool = True) -> Operation:
    """An endpoint that queues the job ``job``: its input as a JSON body (202 with a Location)."""
    return Operation(
        summary,
        {202: _queued(queued), 400: BAD_BODY, 413: TOO_LARGE},
        job=job,
        body_required=body_required,
        query=PRIORITY,
        idempotent=True,
        tags=("jobs",),
    )


OPERATIONS: dict[tuple[str, str], Operation] = {
    ("POST", "/send-email"): _json_job("Queue an email", "the email", "send_email"),
    ("POST", "/jobs"): Operation(
        "Queue any job the API may queue, by its name, with its keyword arguments",
        {
            202: _queued("the job"),
            400: BAD_BODY,
            404: _error("no job of this name may be queued through the API"),
            413: TOO_LARGE,
        },
        any_job=True,
        query=PRIORITY,
        idempotent=True,
        tags=("jobs",),
    ),
    ("GET", "/task-status/{task_id}"): Operation(
        "A task's status, result or error",
        {200: Answer("the task's status", responses.TaskStatus), 404: NO_SUCH_TASK},
        tags=("jobs",),
    ),
    ("POST", "/upload"): Operation(
        "Upload an image; a job makes its thumbnail",
        UPLOAD_ANSWERS,
        multipart=UPLOAD_FORM,
        query=PRIORITY,
        idempotent=True,
        tags=("jobs",),
    ),
    ("POST", "/register"): Operation(
        "Create a user and queue their welcome email",
        {
            201: Answer(
                "the user, and the welcome email's task",
                responses.Registered,
                headers=("Location",),
            ),
            400: BAD_BODY,
            409: _error("this email address is already registered"),
            413: TOO_LARGE,
            503: _error("Redis or the users database is unreachable: try again shortly"),
        },
        body=schemas.RegisterRequest,
        query=PRIORITY,
        idempotent=True,
        tags=("jobs",),
    ),
    ("POST", "/events"): _json_job("Log an event (fire and forget)", "the event", "log_event"),
    ("POST", "/webhooks"): _json_job("Queue a webhook delivery", "the delivery", "deliver_webhook"),
    ("POST", "/reports/daily"): _json_job(
        "Run the daily report now (yesterday's, or the given day's)",
        "the report",
        "daily_report",
        body_required=False,
    ),
    ("GET", "/jobs/{job_id}/events"): Operation(
        "A job's state changes and progress, as Server-Sent Events until it finishes",
        {
            200: Answer(
                "an event stream: a snapshot, then each change",
                media="text/event-stream",
                schema={"type": "string"},
            ),
            404: NO_SUCH_TASK,
            429: TOO_MANY_STREAMS,
        },
        tags=("jobs",),
    ),
    ("GET", "/jobs/failed"): Operation(
        "The failed-jobs list, newest first",
        {
            200: Answer("one page of failed jobs", responses.FailedJobsPage),
            400: _error("offset or limit out of range"),
        },
        query={
            "offset": {"type": "integer", "minimum": 0, "maximum": 10**9, "default": 0},
            "limit": {"type": "integer", "minimum": 1, "maximum": 100, "default": 20},
        },
        tags=("control",),
    ),
    ("GET", "/jobs"): Operation(
        "Search jobs by function, state, business key, time and id prefix, newest first",
        {
            200: Answer("one page of matching jobs with their state", responses.SearchResults),
            400: _error("an unknown or repeated parameter, or a bad value"),
        },
        query=SEARCH_FILTERS
        | {
            "limit": {"type": "integer", "minimum": 1, "maximum": 100, "default": 20},
            "cursor": {"type": "string", "description": "a previous page's next"},
        },
        tags=("control",),
    ),
    ("POST", "/jobs/bulk"): Operation(
        "Retry, cancel or delete every job a search matches (at most BULK_MAX_JOBS)",
        {
            200: Answer("each matched job done once, or skipped with why", responses.BulkResult),
            400: BAD_BODY,
            409: Answer(
                "the search no longer matches expected: nothing done", responses.CountChanged
            ),
        },
        body=schemas.BulkRequest,
        tags=("control",),
    ),
    ("POST", "/jobs/{task_id}/retry"): Operation(
        "Run a failed job again",
        {
            202: _queued("the job"),
            404: NO_SUCH_TASK,
            409: _error("the job is not in the failed-jobs list"),
        },
        tags=("control",),
    ),
    ("POST", "/jobs/{task_id}/replay"): Operation(
        "Send a finished webhook again, as a new job that links to it",
        {
            202: Answer(
                "the replay queued; its status is at the Location",
                responses.ReplayAccepted,
                headers=("Location",),
            ),
            404: NO_SUCH_TASK,
            409: _error(
                "not a replayable job (only deliver_webhook is), not finished yet, or its"
                " arguments were too large to keep"
            ),
        },
        tags=("control",),
    ),
    ("DELETE", "/jobs/{task_id}"): Operation(
        "Cancel a job",
        {
            200: Answer("cancelled before it ran", responses.TaskStatus),
            202: Answer("running: cancellation requested", responses.TaskStatus),
            404: NO_SUCH_TASK,
            409: _error("the job has already finished"),
        },
        tags=("control",),
    ),
    ("GET", "/health"): Operation(
        "Redis, the worker and the queue depth",
        {200: Answer("all is well", responses.Health)},
        tags=("operations",),
    ),
    ("GET", "/metrics"): Operation(
        "The web process's Prometheus metrics (each worker serves its own)",
        {200: Answer("Prometheus text format", media="text/plain", schema={"type": "string"})},
        uses_redis=False,  # an unreachable Redis shows as a NaN queue depth, not an error
        tags=("operations",),
    ),
    ("GET", "/stats/throughput"): Operation(
        "Jobs completed and failed: per second for 5 minutes, per minute for 24 hours, or per "
        "hour for 30 days",
        {
            200: Answer("counts per step, oldest first", responses.Throughput),
            400: _error("range is not one of 5m, 24h, 30d, or given twice"),
        },
        query={"range": {"type": "string", "enum": ["5m", "24h", "30d"], "default": "5m"}},
        tags=("operations",),
    ),
    ("GET", "/stats/functions"): Operation(
        "Per function, the last hour: jobs, failure rate, duration p50/p95, queue wait p95",
        {200: Answer("each function with an attempt in the last hour", responses.FunctionsStats)},
        tags=("operations",),
    ),
    ("GET", "/queue"): Operation(
        "The queue as a whole: paused or not, jobs running, jobs queued",
        {200: Answer("the queue's state", responses.QueueState)},
        tags=("operations",),
    ),
    ("POST", "/queue/pause"): Operation(
        "Pause the queue: jobs are still accepted, workers take none; running ones finish",
        {200: Answer("paused (already paused: unchanged)", responses.QueueState)},
        tags=("operations",),
    ),
    ("POST", "/queue/resume"): Operation(
        "Resume the queue: workers take jobs again",
        {200: Answer("not paused (any more)", responses.QueueState)},
        tags=("operations",),
    ),
    ("POST", "/queue/drain"): Operation(
        "Pause the queue, then wait until no job runs",
        {
            200: Answer("paused and nothing runs: safe to stop the workers", responses.QueueState),
            202: Answer(
                "paused, jobs still running after timeout: call again", responses.QueueState
            ),
            400: _error("timeout out of range"),
        },
        query={
            "timeout": {
                "type": "integer",
                "minimum": 0,
                "maximum": queue_control.DRAIN_MAX,
                "default": queue_control.DRAIN_DEFAULT,
            }
        },
        tags=("operations",),
    ),
    ("GET", "/breakers"): Operation(
        "The circuit breakers per destination (webhook hosts, the SMTP server), open ones first",
        {200: Answer("every tracked destination", responses.BreakerList)},
        tags=("operations",),
    ),
    ("POST", "/breakers/{destination}/close"): Operation(
        "Close a destination's circuit breaker now: its waiting jobs run at once",
        {200: Answer("closed", responses.BreakerClosed), 404: NO_BREAKER},
        path_params={"destination": DESTINATION},
        tags=("operations",),
    ),
    ("GET", "/crons"): Operation(
        "The cron schedules: paused or not, next five runs, last twenty runs",
        {200: Answer("every schedule", responses.CronList)},
        tags=("operations",),
    ),
    ("POST", "/crons/{name}/pause"): Operation(
        "Pause one cron schedule: every worker skips its runs until it is resumed",
        {200: Answer("the schedule, paused", responses.CronState), 404: NO_CRON},
        tags=("operations",),
    ),
    ("POST", "/crons/{name}/resume"): Operation(
        "Resume one cron schedule",
        {200: Answer("the schedule, not paused", responses.CronState), 404: NO_CRON},
        tags=("operations",),
    ),
    # the dashboard: HTML pages and form actions (web/dashboard.py); a browser signs in and
    # sends its session cookie and CSRF token, an API client may use its bearer token instead
    ("GET", "/dashboard"): Operation(
        "Dashboard: queue, running, failed and retrying jobs, crons, workers",
        {200: PAGE},
        tags=("dashboard",),
    ),
    ("GET", "/dashboard/events"): Operation(
        "Dashboard: overview changes as Server-Sent Events, while the page is open",
        {
            200: Answer(
                "an event stream, until the page closes it", media="text/event-stream", schema={}
            ),
            429: TOO_MANY_STREAMS,
        },
        tags=("dashboard",),
    ),
    ("GET", "/dashboard/sign-in"): Operation(
        "Dashboard: the sign-in page",
        {200: PAGE},
        query={"next": {"type": "string"}},
        uses_redis=False,
        tags=("dashboard",),
    ),
    ("POST", "/dashboard/sign-in"): Operation(
        "Dashboard: sign in with an API token (sets the session cookie)",
        {
            303: SEE_OTHER,
            403: Answer(
                "a wrong token (the page again) or a cross-site post",
                responses.ErrorAnswer,
                also=("text/html",),
            ),
            411: _error("chunked, with no Content-Length: the size is checked before reading"),
            413: _error("the form is over 4 KiB"),
            429: _error("too many sign-in attempts from this address: wait Retry-After seconds"),
        },
        form={"token": {"type": "string"}, "next": {"type": "string"}},
        tags=("dashboard",),
    ),
    ("POST", "/dashboard/sign-out"): Operation(
        "Dashboard: sign out", {303: SEE_OTHER}, tags=("dashboard",)
    ),
    ("GET", "/dashboard/jobs/{job_id}"): Operation(
        "Dashboard: one job's attempts, arguments, result and live status",
        {200: PAGE, 404: Answer("no such job: a page saying so", media="text/html", schema={})},
        tags=("dashboard",),
    ),
    ("GET", "/dashboard/upload"): Operation(
        "Dashboard: the upload page", {200: PAGE}, uses_redis=False, tags=("dashboard",)
    ),
    ("POST", "/dashboard/upload"): Operation(
        "Dashboard: upload an image (as POST /upload)",
        UPLOAD_ANSWERS,
        multipart=UPLOAD_FORM,
        tags=("dashboard",),
    ),
    ("GET", "/dashboard/thumbnails/{name}"): Operation(
        "Dashboard: a thumbnail the image job wrote",
        {
            200: Answer("the image", media="image/*", schema={}),
            404: _error("no such thumbnail"),
        },
        uses_redis=False,
        tags=("dashboard",),
    ),
    ("GET", "/dashboard/mail"): Operation(
        "Dashboard: what the dev mail sink captured (development only)",
        {200: PAGE, 404: _error("the Mail page is off (DASHBOARD_MAIL_PAGE)")},
        uses_redis=False,
        tags=("dashboard",),
    ),
    ("POST", "/dashboard/crons/{name}/run"): Operation(
        "Dashboard: run a cron schedule's job now",
        {303: SEE_OTHER, 404: NO_CRON},
        tags=("dashboard",),
    ),
    ("POST", "/dashboard/crons/{name}/pause"): Operation(
        "Dashboard: pause a cron schedule (as POST /crons/{name}/pause)",
        {303: SEE_OTHER, 404: NO_CRON},
        tags=("dashboard",),
    ),
    ("POST", "/dashboard/crons/{name}/resume"): Operation(
        "Dashboard: resume a cron schedule (as POST /crons/{name}/resume)",
        {303: SEE_OTHER, 404: NO_CRON},
        tags=("dashboard",),
    ),
    ("POST", "/dashboard/breakers/{destination}/close"): Operation(
        "Dashboard: close a circuit breaker now (as POST /breakers/{destination}/close)",
        {303: SEE_OTHER, 404: NO_BREAKER},
        path_params={"destination": DESTINATION},
        tags=("dashboard",),
    ),
    ("POST", "/dashboard/queue/pause"): Operation(
        "Dashboard: pause the queue (as POST /queue/pause)", {303: SEE_OTHER}, tags=("dashboard",)
    ),
    ("POST", "/dashboard/queue/resume"): Operation(
        "Dashboard: resume the queue (as POST /queue/resume)",
        {303: SEE_OTHER},
        tags=("dashboard",),
    ),
    ("POST", "/dashboard/jobs/{job_id}/retry"): Operation(
        "Dashboard: run a failed job again",
        {303: SEE_OTHER, 409: _error("the job is not in the failed-jobs list")},
        tags=("dashboard",),
    ),
    ("POST", "/dashboard/jobs/{job_id}/replay"): Operation(
        "Dashboard: send a finished webhook again, as a new job (as POST /jobs/{task_id}/replay)",
        {
            303: SEE_OTHER,
            404: NO_SUCH_TASK,
            409: _error("not a replayable job, not finished yet, or its arguments were not kept"),
        },
        tags=("dashboard",),
    ),
    ("POST", "/dashboard/jobs/{job_id}/delete"): Operation(
        "Dashboard: drop a job from the failed-jobs list",
        {303: SEE_OTHER, 409: _error("the job is not in the failed-jobs list")},
        tags=("dashboard",),
    ),
    ("POST", "/dashboard/jobs/{job_id}/cancel"): Operation(
        "Dashboard: cancel a job",
        {303: SEE_OTHER, 404: NO_SUCH_TASK, 409: _error("the job has already finished")},
        tags=("dashboard",),
    ),
    ("GET", "/dashboard/search"): Operation(
        "Dashboard: search jobs (the filters of GET /jobs), with bulk buttons",
        {200: PAGE, 400: Answer("a bad filter: the page says which", media="text/html", schema={})},
        query=FORM_FILTERS,
        tags=("dashboard",),
    ),
    ("GET", "/dashboard/search/confirm"): Operation(
        "Dashboard: how many jobs a bulk action would touch, to confirm",
        {200: PAGE, 400: _error("a bad filter or action")},
        query=FORM_FILTERS  # it is the search page's form that links here
        | {"action": {"type": "string", "enum": ["retry", "cancel", "delete"]}},
        tags=("dashboard",),
    ),
    ("POST", "/dashboard/search/bulk"): Operation(
        "Dashboard: the confirmed bulk action (as POST /jobs/bulk)",
        {
            303: SEE_OTHER,
            400: _error("a bad filter, action or count"),
            409: Answer("the count changed: the confirmation again", media="text/html", schema={}),
        },
        form={
            "action": {"type": "string", "enum": ["retry", "cancel", "delete"]},
            "expected": {"type": "string", "pattern": "^[0-9]{1,7}$"},
        },
        tags=("dashboard",),
    ),
    ("GET", "/dashboard/static/{filename}"): Operation(
        "Dashboard: its stylesheet and script",
        {
            200: Answer("the file", media="*/*", schema={}),
            403: _error("not a file of the folder"),
            # aiohttp's static handler answers a missing file with an empty octet-stream
            404: Answer("no such file", responses.ErrorAnswer, also=("application/octet-stream",)),
        },
        uses_redis=False,
        tags=("dashboard",),
    ),
    ("GET", "/openapi.json"): Operation(
        "This description",
        {200: Answer("OpenAPI 3.1", schema={"type": "object"})},
        uses_redis=False,
        tags=("operations",),
    ),
}

KEY_REUSED = _error("this Idempotency-Key was already used for a different request")
KEY_BUSY = _error("a request with this Idempotency-Key is still being handled")
IDEMPOTENCY_KEY = {
    "name": "Idempotency-Key",
    "in": "header",
    "required": False,
    "description": "repeat a request safely: a repeat replays the first answer and runs nothing",
    "schema": {"type": "string", "minLength": 1, "maxLength": 255, "pattern": "^[ -~]+$"},
}
TO_SIGN_IN = Answer(
    "a browser without a session (Accept: text/html) is sent to the sign-in page",
    media="text/plain",
    schema={"type": "string"},
    headers=("Location",),
)
UNAUTHORIZED = _error("no API token: send Authorization: Bearer <token>")
FORBIDDEN = _error("the API token is not valid")
RATE_LIMITED = _error("over a rate limit or the token's payload quota: wait Retry-After seconds")
BODY_TOO_SLOW = _error("the body did not arrive within its time limit (the connection closes)")
UNAVAILABLE = _error("Redis is unreachable: try again shortly")


def routes_of(app: web.Application) -> set[tuple[str, str]]:
    """(method, path pattern) of every route the app serves, HEAD aside (it mirrors GET).

    A static folder's pattern is its prefix; its files are ``{prefix}/{filename}``.
    """
    found = set()
    for route in app.router.routes():
        resource = route.resource
        if resource is not None and route.method not in {"HEAD", "*"}:
            path = resource.canonical
            if isinstance(resource, web.StaticResource):
                path += "/{filename}"
            found.add((route.method, path))
    return found


def _content(answer: Answer) -> dict[str, Any]:
    content: dict[str, Any] = {}
    if answer.media is None:
        return content
    if answer.model is not None:
        ref = REF_TEMPLATE.format(model=answer.model.__name__)
        content[answer.media] = {"schema": {"$ref": ref}}
    else:
        content[answer.media] = {"schema": dict(answer.schema or {})}
    for media in answer.also:
        content[media] = {"schema": {}}
    return content


def _either(first: Answer, second: Answer) -> Answer:
    """One status with two meanings (a 409 for a taken address or a busy key)."""
    return Answer(f"{first.description}; or {second.description}", first.model or second.model)


def _replayed(operation: Operation) -> Answer:
    """The 200 a repeated Idempotency-Key gets: the first answer's body, flagged."""
    first = min(status for status in operation.answers if 200 <= status < 300)
    model = operation.answers[first].model
    headers = ("Location", "Idempotent-Replayed")
    return Answer("a repeat of an earlier request: its first answer", model, headers=headers)


def _answers(method: str, path: str, operation: Operation) -> dict[str, Any]:
    answers = dict(operation.answers)
    if operation.idempotent:
        for status, answer in {200: _replayed(operation), 409: KEY_BUSY, 422: KEY_REUSED}.items():
            answers[status] = _either(answers[status], answer) if status in answers else answer
    if not is_public(method, path):
        answers.update({401: UNAUTHORIZED, 403: FORBIDDEN})
        answers.setdefault(429, RATE_LIMITED)
    if (
        operation.body
        or operation.job
        or operation.any_job
        or operation.multipart
        or operation.form
    ):
        answers.setdefault(408, BODY_TOO_SLOW)  # web.deadlines
    if operation.uses_redis:
        answers.setdefault(503, UNAVAILABLE)
    if _path_names(path):
        answers.setdefault(404, NO_MATCH)  # a malformed name or id matches no route at all
    if accepts_session(path) and not is_public(method, path) and method == "GET":
        answers.setdefault(303, TO_SIGN_IN)
    documented: dict[str, Any] = {}
    for status, answer in sorted(answers.items()):
        entry: dict[str, Any] = {"description": answer.description}
        if content := _content(answer):
            entry["content"] = content
        if answer.headers:
            entry["headers"] = {name: {"schema": {"type": "string"}} for name in answer.headers}
        documented[str(status)] = entry
    return documented


def _path_names(path: str) -> list[str]:
    return re.findall(r"\{(\w+)\}", path)


def _parameters(path: str, operation: Operation) -> list[dict[str, Any]]:
    parameters: list[dict[str, Any]] = []
    for name in _path_names(path):
        schema = operation.path_params.get(name, TASK_ID if name in JOB_ID_NAMES else PLAIN_NAME)
        parameters.append({"name": name, "in": "path", "required": True, "schema": dict(schema)})
    for name, schema in operation.query.items():
        parameters.append({"name": name, "in": "query", "required": False, "schema": dict(schema)})
    if operation.idempotent:
        parameters.append(dict(IDEMPOTENCY_KEY))
    return parameters


def _ref(model: type[BaseModel]) -> dict[str, str]:
    return {"$ref": REF_TEMPLATE.format(model=model.__name__)}


def _body_models(operation: Operation, registry: Registry) -> list[type[BaseModel]]:
    """The JSON body's model(s): one, or one per job for ``POST /jobs``."""
    if operation.job is not None:
        return [request_model(registry[operation.job])]
    if operation.any_job:
        return [api_request_model(job) for job in registry.api_jobs()]
    return [operation.body] if operation.body is not None else []


def _body(operation: Operation, registry: Registry) -> dict[str, Any] | None:
    if models := _body_models(operation, registry):
        schema: dict[str, Any] = _ref(models[0])
        if operation.any_job:
            mapping = {
                job.name: _ref(model)["$ref"]
                for job, model in zip(registry.api_jobs(), models, strict=True)
            }
            schema = {
                "oneOf": [_ref(model) for model in models],
                "discriminator": {"propertyName": "function", "mapping": mapping},
            }
        content = {"application/json": {"schema": schema}}
        return {"required": operation.body_required, "content": content}
    for media, fields in (
        ("multipart/form-data", operation.multipart),
        ("application/x-www-form-urlencoded", operation.form),
    ):
        if fields is not None:
            schema = {"type": "object", "properties": dict(fields), "required": list(fields)}
            return {"required": True, "content": {media: {"schema": schema}}}
    return None


def _operation_id(method: str, path: str) -> str:
    """``post_send-email``, ``get_task-status_task_id``: unique per method and path."""
    words = path.replace("{", "").replace("}", "").strip("/").replace("/", "_")
    return f"{method.lower()}_{words}"


def _operation(method: str, path: str, operation: Operation, registry: Registry) -> dict[str, Any]:
    described: dict[str, Any] = {
        "summary": operation.summary,
        "operationId": _operation_id(method, path),
        "tags": list(operation.tags),
        "responses": _answers(method, path, operation),
    }
    if parameters := _parameters(path, operation):
        described["parameters"] = parameters
    if (body := _body(operation, registry)) is not None:
        described["requestBody"] = body
    if is_public(method, path):
        described["security"] = []
    return described


def _component_schemas(registry: Registry) -> dict[str, Any]:
    models: set[type[BaseModel]] = {responses.ErrorAnswer}
    for operation in OPERATIONS.values():
        models.update(_body_models(operation, registry))
        models.update(a.model for a in operation.answers.values() if a.model is not None)
    ordered = sorted(models, key=lambda model: model.__name__)
    _, top = models_json_schema(
        [(model, "validation") for model in ordered], ref_template=REF_TEMPLATE
    )
    defs: dict[str, Any] = top.get("$defs", {})
    return defs


def build_spec(app: web.Application) -> dict[str, Any]:
    """The description of every documented route this app serves."""
    paths: dict[str, dict[str, Any]] = {}
    for method, path in sorted(routes_of(app)):
        operation = OPERATIONS.get((method, path))
        if operation is not None:
            described = _operation(method, path, operation, app[REGISTRY])
            paths.setdefault(path, {})[method.lower()] = described
    return {
        "openapi": "3.1.0",
        "info": {
            "title": TITLE,
            "version": VERSION,
            "description": "Background jobs over HTTP: queue work, follow its status.",
        },
        "paths": paths,
        "components": {
            "schemas": _component_schemas(app[REGISTRY]),
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
        "security": [{"bearer": []}],
    }


async def describe_api(app: web.Application) -> None:
    """Build the description once the routes are final (on start-up)."""
    app[OPENAPI] = json.dumps(build_spec(app)).encode()


async def openapi_json(request: web.Request) -> web.Response:
    return web.Response(body=request.app[OPENAPI], content_type="application/json")
