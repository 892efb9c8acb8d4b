"""The HTTP API's routes, in one list."""

from __future__ import annotations

from aiohttp import web

from web import job_control, live, views
from web.idempotency import idempotent, upload_fingerprint


def setup_routes(app: web.Application) -> None:
    app.add_routes(
        [
            web.post("/send-email", idempotent(views.send_email)),
            web.get("/task-status/{task_id}", views.get_task_status),
            web.post("/upload", idempotent(views.upload, upload_fingerprint)),
            web.post("/register", idempotent(views.register)),
            web.post("/events", idempotent(views.log_event)),
            web.post("/webhooks", idempotent(views.deliver_webhook)),
            web.post("/reports/daily", idempotent(views.run_daily_report)),
            web.get("/health", views.health),
            web.get("/jobs/{job_id}/events", live.job_events),
            web.get("/jobs/failed", job_control.list_failed),
            web.post("/jobs/{task_id}/retry", job_control.retry_failed),
            web.delete("/jobs/{task_id}", job_control.cancel),
            web.get("/metrics", views.metrics),
        ]
    )
    live.setup_live(app)
