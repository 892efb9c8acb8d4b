"""The worker's own ``/metrics`` endpoint: a tiny aiohttp server on WORKER_METRICS_PORT.

Prometheus scrapes each worker directly, as it would any process: no Redis round trip per
job to pool counters centrally, and a dead worker shows up as a failed scrape (``up == 0``).
"""

from __future__ import annotations

import logging

from aiohttp import web
from prometheus_client import CollectorRegistry

from service.observability.metrics import CONTENT_TYPE, exposition

logger = logging.getLogger("jobservice.metrics")


def metrics_app(registry: CollectorRegistry) -> web.Application:
    """An app answering ``GET /metrics`` with the registry's current values."""

    async def metrics(request: web.Request) -> web.Response:
        response = web.Response(body=await exposition(registry))
        response.headers["Content-Type"] = CONTENT_TYPE
        return response

    app = web.Application()
    app.router.add_get("/metrics", metrics)
    return app


async def start_metrics_server(
    registry: CollectorRegistry, host: str, port: int
) -> web.AppRunner | None:
    """Serve the registry on ``host:port``; None when the port cannot be bound.

    A worker that cannot export metrics (the port is taken, e.g. by a second worker on the
    same host left at the same WORKER_METRICS_PORT) still runs jobs: it logs the error loudly
    instead of refusing to start.
    """
    runner = web.AppRunner(metrics_app(registry), access_log=None, handle_signals=False)
    await runner.setup()
    try:
        await web.TCPSite(runner, host, port).start()
    except OSError as exc:
        logger.error("worker metrics not served: cannot listen on %s:%d: %s", host, port, exc)
        await runner.cleanup()
        return None
    logger.info("worker metrics on http://%s:%d/metrics", host, port)
    return runner
