"""Prometheus metrics of the web process: HTTP requests by route, jobs enqueued, queue depth,
whether the queue is paused."""

from __future__ import annotations

import asyncio

from aiohttp import web
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from redis.asyncio import Redis
from redis.exceptions import RedisError

from service.engine.queue_counts import queue_counts
from service.engine.queues import QueueLayout
from service.observability.metrics import (
    exposition,
    named_queue_gauges,
    queue_jobs_gauge,
    set_named_queue_jobs,
    set_queue_jobs,
)
from service.records import workers
from service.records.times import now_ms
from service.store import keys

KNOWN_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
UNMATCHED = "(unmatched)"  # 404s and the like: one label value, whatever the URL was
DEPTH_TIMEOUT = 2.0


def route_label(request: web.Request) -> str:
    """The matched route's canonical path (``/task-status/{task_id}``), never the raw URL,
    so a client probing random paths cannot create new time series."""
    resource = request.match_info.route.resource
    return resource.canonical if resource is not None else UNMATCHED


def method_label(request: web.Request) -> str:
    return request.method if request.method in KNOWN_METHODS else "OTHER"


class WebMetrics:
    """The web process's registry and the metrics in it."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry
        self.requests = Counter(
            "jobservice_http_requests",
            "HTTP requests answered, by method, route and status.",
            ["method", "route", "status"],
            registry=registry,
        )
        self.latency = Histogram(
            "jobservice_http_request_duration_seconds",
            "Time to answer an HTTP request, by method and route.",
            ["method", "route"],
            registry=registry,
        )
        self.enqueued = Counter(
            "jobservice_jobs_enqueued",
            "Jobs the API queued, by function.",
            ["function"],
            registry=registry,
        )
        self._children: dict[tuple[str, str, int], tuple[Counter, Histogram]] = {}
        self._enqueued_children: dict[str, Counter] = {}
        self.queue_depth = Gauge(
            "jobservice_queue_depth",
            "Jobs in the queue that no worker runs (waiting and deferred), read at scrape "
            "time; NaN when Redis did not answer.",
            registry=registry,
        )
        self.queue_jobs = queue_jobs_gauge(registry, "read at scrape time")

        self.named_queue_jobs, self.queue_workers = named_queue_gauges(
            registry, "read at scrape time"
        )
        self.queue_paused = Gauge(
            "jobservice_queue_paused",
            "1 while the queue is paused (POST /queue/pause): workers take no job; read at "
            "scrape time, NaN when Redis did not answer.",
            registry=registry,
        )

    def count_enqueued(self, function: str) -> None:
        counter = self._enqueued_children.get(function)
        if counter is None:  # as in observe_request: one child per function, kept once found
            counter = self._enqueued_children[function] = self.enqueued.labels(function)
        counter.inc()

    def observe_request(self, method: str, route: str, status: int, seconds: float) -> None:
        key = (method, route, status)
        children = self._children.get(key)
        if children is None:
            # labels() costs a lock and a lookup per call; the label sets are bounded
            # (routes x methods x statuses), so keep each pair of children once found
            children = (
                self.requests.labels(method, route, str(status)),
                self.latency.labels(method, route),
            )
            self._children[key] = children
        children[0].inc()
        children[1].observe(seconds)

    async def render(self, redis: Redis, layout: QueueLayout) -> bytes:
        """The text exposition, with the queues' counts, their workers and the pause read
        from Redis just now."""
        try:
            async with asyncio.timeout(DEPTH_TIMEOUT):
                now = now_ms()
                counts, paused, alive, *named = await asyncio.gather(
                    queue_counts(redis, layout.all_keys(), now),
                    redis.exists(keys.paused(layout.base)),
                    workers.alive(redis, layout.base),
                    *(queue_counts(redis, layout.keys_of(queue), now) for queue in layout.queues),
                )
        except (RedisError, OSError, TimeoutError):
            self.queue_depth.set(float("nan"))
            set_queue_jobs(self.queue_jobs, float("nan"), float("nan"), float("nan"))
            self.queue_paused.set(float("nan"))
        else:
            self.queue_depth.set(counts.queued)
            set_queue_jobs(self.queue_jobs, counts.waiting, counts.deferred, counts.running)
            self.queue_paused.set(paused)
            for queue, depth in zip(layout.queues, named, strict=True):
                set_named_queue_jobs(
                    self.named_queue_jobs, queue, depth.waiting, depth.deferred, depth.running
                )
                self.queue_workers.labels(queue).set(sum(w.serves(queue) for w in alive))
        return await exposition(self.registry)
