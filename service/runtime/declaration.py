"""A job, declared once: its name, coroutine, limits, retry policy, input model and schedule.

Each job module ends with one :class:`Job` (``JOB = Job(name="send_email", run=send_email,
...)``) and jobs/registry.py lists them all. Everything else reads that list: the worker
registers the functions, their time limits, retry policies and cron schedules from it; the
web app validates ``POST /jobs`` and the dedicated routes against each job's input model and
documents them in OpenAPI; the status API and the dashboard show what it declares. Adding a
job is therefore one module and one line in the list (README "Add your own job").
"""

from __future__ import annotations

import dataclasses
import inspect
from collections.abc import Awaitable, Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from pydantic import BaseModel
from redis.asyncio import Redis

from service.engine.queues import (
    DEFAULT_QUEUE,
    NORMAL,
    Priority,
    QueueLayout,
    check_priority,
    check_queue_name,
)
from service.records.search_index import normalize_key
from service.records.status import Declared
from service.store import keys
from settings import Settings

TimeLimit = float | Callable[[Settings], float]
# (settings, Redis, the validated input) -> the addresses a run queued now would mail
MailsTo = Callable[[Settings, Redis, Any], Awaitable[Sequence[str]]]
# (the validated input) -> the business keys job search finds the job by
SearchKeys = Callable[[Any], Iterable[str]]
# (its keyword arguments, the settings) -> the destination whose circuit breaker it obeys
Destination = Callable[[Mapping[str, Any], Settings], str | None]
Weekday = Literal["mon", "tues", "wed", "thurs", "fri", "sat", "sun"]


@dataclass(frozen=True, slots=True)
class Cron:
    """When a job runs on its own, in CRON_TIMEZONE: arq's cron fields (a value, a set of
    values, or None for "every"); ``Cron(hour=0)`` is every day at 00:00:00."""

    month: int | set[int] | None = None
    day: int | set[int] | None = None
    weekday: int | set[int] | Weekday | None = None
    hour: int | set[int] | None = None
    minute: int | set[int] | None = 0
    second: int | set[int] = 0

    def fields(self) -> dict[str, Any]:
        """As arq's ``cron()`` and ``next_cron()`` take them, by keyword."""
        return {field.name: getattr(self, field.name) for field in dataclasses.fields(self)}


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """How often a job runs before it fails for good, and how long it waits in between.

    ``None`` takes the service-wide setting (JOB_MAX_TRIES, RETRY_BACKOFF_BASE,
    RETRY_BACKOFF_MAX). Only a :class:`~service.runtime.TransientError` is retried; every
    start counts as a try, including one cut short by a dying worker.
    """

    max_tries: int | None = None
    backoff_base: float | None = None
    backoff_max: float | None = None

    def tries(self, settings: Settings) -> int:
        return settings.job_max_tries if self.max_tries is None else self.max_tries

    def backoff(self, settings: Settings) -> tuple[float, float]:
        """(base, cap) of the exponential backoff, in seconds."""
        base = settings.retry_backoff_base if self.backoff_base is None else self.backoff_base
        cap = settings.retry_backoff_max if self.backoff_max is None else self.backoff_max
        return base, cap


@dataclass(frozen=True, slots=True)
class SlotLimit:
    """At most ``per_key(settings)`` attempts of a job with the same ``key`` run at once in a
    worker (``0``: no limit), so that one slow destination cannot take every worker slot.

    ``key`` reads the job's keyword arguments (``None``: this job is not limited). A job over
    the limit goes back to the queue for about a second without using up a try and without
    holding a slot (service.worker.slots).
    """

    key: Callable[[Mapping[str, Any]], str | None]
    per_key: Callable[[Settings], int]


@dataclass(frozen=True, slots=True)
class RateLimit:
    """Sends shared by every worker: the job's runs with the same ``scope`` start at most as
    often as ``limit(settings)`` says (``"10/second;50000/day"``; empty: no limit).

    ``scope`` reads the job's keyword arguments (``None``: this run is not limited); jobs that
    return the same scope share one limit (every email job: ``"email"``). A run over the
    limit is put back in the queue until its booked slot, using up no try; ``setting`` names
    the limit in its status (``waiting_for``). See service.worker.rate_gate.
    """

    scope: Callable[[Mapping[str, Any]], str | None]
    limit: Callable[[Settings], str]
    setting: str


def _default_time_limit(settings: Settings) -> float:
    return settings.job_timeout


@dataclass(frozen=True, slots=True, eq=False)  # one object per job: hashed by identity
class Job:
    """One job's declaration; see the module docstring."""

    name: str
    run: Callable[..., Awaitable[Any]]  # async def run(ctx, *, <the input model's fields>)
    input: type[BaseModel]  # its keyword arguments, validated by the API before queueing
    time_limit: TimeLimit = _default_time_limit  # seconds, or read from the settings
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    keep_result: bool = True  # False: fire and forget (the status API still tells the outcome)
    cron: Cron | None = None
    api: bool = False  # POST /jobs may queue it (its dedicated route, if any, always can)
    # The addresses a run queued now would mail that its input does not name in MailRecipient
    # fields (ones the settings give, such as REPORT_RECIPIENTS): whoever queues it through
    # the API counts them against RATE_LIMIT_PER_RECIPIENT, as it counts those fields.
    mails_to: MailsTo | None = None
    # largest request body that may queue it, in bytes (read from the settings); None: the
    # app's JSON body limit. Its arguments sit in Redis until it has run, so a job taking a
    # free-form payload sets one (webhooks, events)
    max_payload: Callable[[Settings], int] | None = None
    # a finished run keeps its arguments (up to REPLAY_MAX_ARGUMENT_BYTES) in its tracking
    # hash, so POST /jobs/{id}/replay can queue it again as a new job (a delivered webhook)
    replayable: bool = False
    slots: SlotLimit | None = None  # how many may run at once per key (a webhook's host)
    # the destination it sends to ("webhook:<host>", "smtp": service.runtime's
    # webhook_destination, smtp_destination; None: none): while that destination's circuit
    # breaker is open the job waits in the queue, unstarted (service.worker.breakers)
    destination: Destination | None = None
    rate: RateLimit | None = None  # how often runs may start, across workers, per scope
    # what an operator searches its runs by (GET /jobs?key=...), read from its input when it is
    # queued: a recipient address, "user:<id>", a webhook host. Matched whole, in any case
    search_keys: SearchKeys | None = None
    # the named queue it waits in (a worker pool serves some queues: WORKER_QUEUES) and its
    # priority when whoever queues it names none (service.engine.queues)
    queue: str = DEFAULT_QUEUE
    priority: Priority = NORMAL

    @property
    def summary(self) -> str:
        """The first line of the coroutine's docstring, for OpenAPI and the dashboard."""
        doc = inspect.getdoc(self.run) or self.name
        return doc.splitlines()[0]

    def seconds(self, settings: Settings) -> float:
        """Its time limit: past it the attempt is cancelled and the job fails."""
        limit = self.time_limit
        return float(limit(settings) if callable(limit) else limit)

    def payload_limit(self, settings: Settings) -> int | None:
        """The largest request body (bytes) that may queue it; None: no limit of its own."""
        return None if self.max_payload is None else int(self.max_payload(settings))

    def business_keys(self, job_input: Any) -> tuple[str, ...]:
        """The search keys of a run with this validated input, as the index stores them."""
        if self.search_keys is None:
            return ()
        found = (normalize_key(str(key)) for key in self.search_keys(job_input))
        return tuple(dict.fromkeys(key for key in found if key))

    @property
    def cron_name(self) -> str | None:
        return None if self.cron is None else keys.cron_name(self.name)


class UnknownJobError(LookupError):
    """No job is registered under this name."""


class Registry:
    """Every declared job, by name; the one list the worker, the API and the dashboard read."""

    def __init__(self, jobs: Iterable[Job]) -> None:
        self._jobs: dict[str, Job] = {}
        for job in jobs:
            if job.name in self._jobs:
                raise ValueError(f"two jobs are declared as {job.name!r}")
            if not job.name.isidentifier():
                raise ValueError(f"a job's name must be an identifier, not {job.name!r}")
            check_queue_name(job.queue)
            check_priority(job.priority)
            self._jobs[job.name] = job

    def __iter__(self) -> Iterator[Job]:
        return iter(self._jobs.values())

    def __len__(self) -> int:
        return len(self._jobs)

    def __contains__(self, name: object) -> bool:
        return name in self._jobs

    def __getitem__(self, name: str) -> Job:
        try:
            return self._jobs[name]
        except KeyError:
            raise UnknownJobError(name) from None

    def get(self, name: str) -> Job | None:
        """The job declared as ``name``, if any."""
        return self._jobs.get(name)

    def api_jobs(self) -> list[Job]:
        """The jobs ``POST /jobs`` may queue, by name."""
        return sorted((job for job in self if job.api), key=lambda job: job.name)

    def scheduled(self) -> list[Job]:
        """The jobs with a cron schedule."""
        return [job for job in self if job.cron is not None]

    def layout(self, settings: Settings) -> QueueLayout:
        """Every declared queue, and each job's (and schedule's) queue and priority."""
        routes: dict[str, tuple[str, Priority]] = {}
        for job in self:
            routes[job.name] = (job.queue, job.priority)
            if job.cron_name is not None:
                routes[job.cron_name] = (job.queue, job.priority)
        return QueueLayout(base=settings.queue_name, routes=routes)

    def declared(self, settings: Settings) -> Declared:
        """What a status document shows of each job's declaration, with these settings."""
        return Declared(
            max_tries={job.name: job.retry.tries(settings) for job in self},
            time_limits={job.name: job.seconds(settings) for job in self},
        )
