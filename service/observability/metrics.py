"""Prometheus metrics of the jobs a worker runs, and the text both processes serve at /metrics.

Each process keeps its own :class:`~prometheus_client.CollectorRegistry` (never the global
one), so a test can build many workers and apps in one process without name clashes.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, ProcessCollector
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest

# Jobs run from milliseconds (an event) to minutes (a report); JOB_TIMEOUT is 300 s by default.
JOB_SECONDS_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)
WAIT_SECONDS_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600)

CONTENT_TYPE = CONTENT_TYPE_LATEST


def new_registry() -> CollectorRegistry:
    """A registry of our own, with the process's CPU, memory and open files in it."""
    registry = CollectorRegistry()
    ProcessCollector(registry=registry)
    return registry


async def exposition(registry: CollectorRegistry) -> bytes:
    """The registry in Prometheus's text format, built in a thread: the process collector
    reads files under /proc, which would be blocking calls on the event loop."""
    return await asyncio.get_running_loop().run_in_executor(None, generate_latest, registry)


def queue_jobs_gauge(registry: CollectorRegistry, when: str) -> Gauge:
    """``jobservice_queue_jobs{state}``: the queue's jobs waiting (due, not running),
    deferred (due later) and running, read from Redis ``when``."""
    return Gauge(
        "jobservice_queue_jobs",
        f"Jobs in the queue by state: waiting (due, not running), deferred, running; {when}.",
        ["state"],
        registry=registry,
    )


def named_queue_gauges(registry: CollectorRegistry, when: str) -> tuple[Gauge, Gauge]:
    """``jobservice_named_queue_jobs{queue,state}`` (each named queue's jobs, all its
    priorities, by state) and ``jobservice_queue_workers{queue}`` (live workers serving it),
    read from Redis ``when`` (service.engine.queues)."""
    jobs = Gauge(
        "jobservice_named_queue_jobs",
        f"Jobs of each named queue by state: waiting, deferred, running; {when}.",
        ["queue", "state"],
        registry=registry,
    )
    workers = Gauge(
        "jobservice_queue_workers",
        f"Live workers serving each named queue (WORKER_QUEUES); {when}.",
        ["queue"],
        registry=registry,
    )
    return jobs, workers


def set_named_queue_jobs(
    gauge: Gauge, queue: str, waiting: float, deferred: float, running: float
) -> None:
    gauge.labels(queue, "waiting").set(waiting)
    gauge.labels(queue, "deferred").set(deferred)
    gauge.labels(queue, "running").set(running)


def set_queue_jobs(gauge: Gauge, waiting: float, deferred: float, running: float) -> None:
    gauge.labels("waiting").set(waiting)
    gauge.labels("deferred").set(deferred)
    gauge.labels("running").set(running)


@dataclass(frozen=True, slots=True)
class FunctionMetrics:
    """One function's children of the job metrics, looked up once (labels() takes a lock)."""

    started: Counter
    queue_wait: Histogram
    in_progress: Gauge
    outcomes: dict[str, tuple[Counter, Histogram]]  # outcome -> (its counter, its durations)


BREAKER_STATES = {"closed": 0, "half_open": 1, "open": 2}


class BreakerMetrics:
    """The circuit breakers (service.records.breakers) as this worker last saw them: a state
    gauge per destination that is not closed (bounded by BREAKER_MAX_DESTINATIONS; a closed
    one's series is removed), and transitions this worker made, by kind (webhook, smtp)."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.state = Gauge(
            "jobservice_breaker_state",
            "Circuit breaker per destination: 0 closed, 1 half-open (probing), 2 open.",
            ["destination"],
            registry=registry,
        )
        self.opened = Counter(
            "jobservice_breaker_opened",
            "Circuit breakers this worker opened, by destination kind.",
            ["kind"],
            registry=registry,
        )
        self.closed = Counter(
            "jobservice_breaker_closed",
            "Circuit breakers this worker closed after a successful probe, by destination kind.",
            ["kind"],
            registry=registry,
        )
        self._shown: set[str] = set()

    def show(self, destination: str, state: str) -> None:
        """One destination's state; a closed one's series goes away."""
        if state in ("open", "half_open"):
            self.state.labels(destination).set(BREAKER_STATES[state])
            self._shown.add(destination)
        elif destination in self._shown:
            self._shown.discard(destination)
            self.state.remove(destination)

    def show_all(self, states: dict[str, str]) -> None:
        """Every tracked breaker's state (the periodic refresh): others are closed."""
        for destination in self._shown - set(states):
            self.show(destination, "closed")
        for destination, state in states.items():
            self.show(destination, state)


class JobMetrics:
    """What one worker process counts about the attempts it runs, by function name."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry
        by_function = ["function"]
        self.started = Counter(
            "jobservice_jobs_started", "Job attempts started.", by_function, registry=registry
        )
        self.succeeded = Counter(
            "jobservice_jobs_succeeded", "Jobs that succeeded.", by_function, registry=registry
        )
        self.failed = Counter(
            "jobservice_jobs_failed", "Jobs that failed for good.", by_function, registry=registry
        )
        self.retried = Counter(
            "jobservice_jobs_retried",
            "Attempts that failed transiently; the job runs again after a backoff.",
            by_function,
            registry=registry,
        )
        self.interrupted = Counter(
            "jobservice_jobs_interrupted",
            "Attempts cancelled mid-run (worker shutdown, abort or timeout).",
            by_function,
            registry=registry,
        )
        self.in_progress = Gauge(
            "jobservice_jobs_in_progress", "Jobs running now.", by_function, registry=registry
        )
        self.duration = Histogram(
            "jobservice_job_duration_seconds",
            "Time one attempt ran, by function and outcome.",
            ["function", "outcome"],
            buckets=JOB_SECONDS_BUCKETS,
            registry=registry,
        )
        self.queue_wait = Histogram(
            "jobservice_job_queue_wait_seconds",
            "Time from when a job was due (enqueued, or its retry/schedule time) to its start.",
            by_function,
            buckets=WAIT_SECONDS_BUCKETS,
            registry=registry,
        )
        self.postponed = Counter(
            "jobservice_jobs_postponed",
            "Jobs put back in the queue before they started, using up no try, by reason: "
            "rate_limit (EMAIL_RATE_LIMIT, WEBHOOK_HOST_RATE_LIMIT), host_slots "
            "(WEBHOOK_HOST_CONCURRENCY).",
            ["function", "reason"],
            registry=registry,
        )
        self.emails_sent = Counter(
            "jobservice_emails_sent", "Emails accepted by the SMTP server.", registry=registry
        )
        self.queue_jobs = queue_jobs_gauge(
            registry, "refreshed with the worker's health line (every 10 s)"
        )
        self.breakers = BreakerMetrics(registry)
        self.named_queue_jobs, self.queue_workers = named_queue_gauges(
            registry, "refreshed with the worker's health line (every 10 s)"
        )
        self._functions: dict[str, FunctionMetrics] = {}

    def count_queue(self, waiting: int, deferred: int, running: int) -> None:
        """The queue's jobs by state, as this worker last read them (all workers' jobs)."""
        set_queue_jobs(self.queue_jobs, waiting, deferred, running)

    def count_named_queue(
        self, queue: str, waiting: int, deferred: int, running: int, workers: int
    ) -> None:
        """One named queue this worker serves: its jobs by state, and the live workers
        serving it (this one included), as this worker last read them."""
        set_named_queue_jobs(self.named_queue_jobs, queue, waiting, deferred, running)
        self.queue_workers.labels(queue).set(workers)

    def of(self, function: str) -> FunctionMetrics:
        """The metrics of one job function (success, retry, interrupted, failure outcomes)."""
        found = self._functions.get(function)
        if found is None:
            counters = {
                "success": self.succeeded,
                "retry": self.retried,
                "interrupted": self.interrupted,
                "failure": self.failed,
            }
            found = FunctionMetrics(
                started=self.started.labels(function),
                queue_wait=self.queue_wait.labels(function),
                in_progress=self.in_progress.labels(function),
                outcomes={
                    outcome: (counter.labels(function), self.duration.labels(function, outcome))
                    for outcome, counter in counters.items()
                },
            )
            self._functions[function] = found
        return found
