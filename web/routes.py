"""The HTTP API's routes, in one list."""

from __future__ import annotations

from aiohttp import web

from web import job_control, live, views


def setup_routes(app: web.Application) -> None:
    app.add_routes(
        [
            web.post("/send-email", views.send_email),
            web.get("/task-status/{task_id}", views.get_task_status),
            web.post("/upload", views.upload),
            web.post("/register", views.register),
            web.post("/events", views.log_event),
            web.post("/webhooks", views.deliver_webhook),
            web.post("/reports/daily", views.run_daily_report),
            web.get("/health", views.health),
            web.get("/jobs/{job_id}/events", live.job_events),
            web.get("/jobs/failed", job_control.list_failed),
            web.post("/jobs/{task_id}/retry", job_control.retry_failed),
            web.delete("/jobs/{task_id}", job_control.cancel),
            web.get("/metrics", views.metrics),
        ]
    )
    live.setup_live(app)
