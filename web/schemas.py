"""Request bodies, validated by pydantic in strict mode: wrong types are refused, not coerced.

A route that queues a job takes that job's input model (its declaration in jobs/, see
service.runtime.inputs) plus two optional scheduling fields, ``run_at`` and ``delay``;
``POST /jobs`` takes ``{"function", "kwargs", "run_at", "delay"}`` for any job the registry
lets the API queue. Any problem is a 400 naming the field.
"""

from __future__ import annotations

import functools
import math
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, Literal, TypeVar, cast

from aiohttp import web
from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    ValidationError,
    create_model,
)

from service.engine.queues import Priority, check_priority
from service.runtime import EmailAddress, Job, JobInput, no_control_characters, untrimmed_at_most
from settings import Settings
from web.errors import ApiError

Model = TypeVar("Model", bound=BaseModel)

MAX_AHEAD = timedelta(days=365)  # a job may be scheduled at most this far ahead
SCHEDULING_FIELDS = frozenset({"run_at", "delay"})


class Strict(BaseModel):
    model_config = ConfigDict(strict=True, extra="forbid", frozen=True)


class RegisterRequest(Strict):
    name: Annotated[
        str,
        StringConstraints(strip_whitespace=True, min_length=1, max_length=100),
        untrimmed_at_most(100),
        AfterValidator(no_control_characters),
    ]
    email: EmailAddress


FilterText = Annotated[str | None, StringConstraints(max_length=400)]


class BulkRequest(Strict):
    """``POST /jobs/bulk``: an action on every job a search matches (the filters of
    ``GET /jobs``), and how many jobs the operator saw it match: another count changes
    nothing (409)."""

    action: Literal["retry", "cancel", "delete"]
    expected: int = Field(ge=0, le=1_000_000, description="how many jobs the search matched")
    function: FilterText = None
    state: FilterText = None
    key: FilterText = None
    prefix: FilterText = None
    since: FilterText = None
    until: FilterText = None


class Scheduling(Strict):
    """When to run the job: at a time (RFC 3339, with its offset) or after a delay; neither
    means now. A time in the past runs at once; more than a year ahead is refused."""

    run_at: AwareDatetime | None = Field(
        default=None, description="when to run the job (RFC 3339 with an offset)"
    )
    delay: float | None = Field(
        default=None,
        ge=0,
        le=MAX_AHEAD.total_seconds(),
        allow_inf_nan=False,
        description="seconds to wait before running the job",
    )

    def run_at_ms(self) -> int | None:
        """When to run, in ms since the epoch; None for now. 400 when out of range."""
        if self.run_at is None and self.delay is None:
            return None
        if self.run_at is not None and self.delay is not None:
            raise ApiError(400, "give run_at or delay, not both")
        now = datetime.now(UTC)
        if self.delay is not None:
            return None if self.delay == 0 else math.ceil((now.timestamp() + self.delay) * 1000)
        if self.run_at is None:
            return None
        if self.run_at - now > MAX_AHEAD:
            raise ApiError(400, "run_at: must be at most a year from now")
        return math.ceil(self.run_at.timestamp() * 1000)


class Addressed(BaseModel):
    """What ``POST /jobs`` reads first: which job the body is for (the rest is that job's)."""

    model_config = ConfigDict(strict=True, extra="allow", frozen=True)

    function: str


@functools.cache
def request_model(job: Job) -> type[Scheduling]:
    """The body of a job's dedicated route: its input fields, plus run_at and delay."""
    if clash := SCHEDULING_FIELDS & set(job.input.model_fields):
        raise ValueError(f"job {job.name!r}: {', '.join(sorted(clash))} is reserved for scheduling")
    bases: Any = (job.input, Scheduling)
    return cast(type[Scheduling], create_model(job.input.__name__ + "Request", __base__=bases))


class ApiJobRequest(Scheduling):
    """``POST /jobs``'s body once its job is known: ``kwargs`` is that job's input."""

    function: str
    kwargs: JobInput
    priority: Priority | None = Field(
        default=None, description="the job's priority; default: its declaration's"
    )


def requested_priority(request: web.Request, in_body: Priority | None = None) -> Priority | None:
    """The priority a request asks for: its ``priority`` query parameter (every route that
    queues a job), or ``in_body`` (``POST /jobs``'s field); None: the job's declared one.
    400 for an unknown value, or two that differ, before anything is queued."""
    given = request.query.getall("priority", [])
    if len(given) > 1:
        raise ApiError(400, "priority: give it once")
    asked: Priority | None = None
    if given:
        try:
            asked = check_priority(given[0])
        except ValueError as exc:
            raise ApiError(400, f"priority: {exc}") from None
    if asked is not None and in_body is not None and asked != in_body:
        raise ApiError(400, "priority: the query parameter and the body say different things")
    return asked or in_body


@functools.cache
def api_request_model(job: Job) -> type[ApiJobRequest]:
    """The body ``POST /jobs`` takes for ``job``; OpenAPI lists one per job, told apart by
    ``function``. A job whose arguments all have defaults may leave ``kwargs`` out."""
    optional = all(not field.is_required() for field in job.input.model_fields.values())
    kwargs: Any = (job.input, job.input()) if optional else (job.input, ...)
    function: Any = (Literal[job.name], ...)
    model = create_model(
        f"{job.input.__name__}Job", __base__=ApiJobRequest, function=function, kwargs=kwargs
    )
    return model


@functools.cache
def _input_fields(job: Job) -> set[str]:
    return set(job.input.model_fields)  # never changed: model_dump only reads it


def job_kwargs(job: Job, model: BaseModel) -> dict[str, Any]:
    """The validated input as the job's keyword arguments (JSON types, as stored)."""
    return model.model_dump(mode="json", include=_input_fields(job))


def _describe(error: ValidationError) -> str:
    parts = []
    for item in error.errors():
        where = ".".join(str(part) for part in item["loc"]) or "body"
        message = item["msg"].removeprefix("Value error, ")
        parts.append(f"{where}: {message}")
    return "; ".join(parts)


def _validated(model: type[Model], raw: bytes, settings: Settings | None) -> Model:
    try:
        # JSON mode keeps strict types as JSON has them (a date may be an ISO string)
        return model.model_validate_json(raw, context={"settings": settings})
    except ValidationError as exc:
        kinds = {item["type"] for item in exc.errors() if not item["loc"]}
        if "json_invalid" in kinds:
            raise ApiError(400, "request body must be valid JSON") from None
        if "model_type" in kinds:
            raise ApiError(400, "request body must be a JSON object") from None
        raise ApiError(400, _describe(exc)) from None


def validated(model: type[Model], raw: bytes, settings: Settings | None = None) -> Model:
    """``raw`` (a request body) as ``model``; any problem is a 400 naming the field."""
    return _validated(model, raw, settings)


async def parse_json(
    request: web.Request,
    model: type[Model],
    *,
    settings: Settings | None = None,
    optional: bool = False,
) -> Model:
    """The request's JSON body as ``model``; any problem is a 400 naming the field."""
    return parse_body(await request.read(), model, settings=settings, optional=optional)


def parse_body(
    raw: bytes, model: type[Model], *, settings: Settings | None = None, optional: bool = False
) -> Model:
    """A body already read, as ``model``; with ``optional``, no body means the defaults."""
    if optional and not raw:  # no body at all; whitespace alone is not JSON (a 400)
        return model()
    return _validated(model, raw, settings)
