"""The HTTP API's routes, in one list."""

from __future__ import annotations

from pathlib import Path

from aiohttp import web

from web import (
    breaker_control,
    cron_control,
    dashboard,
    job_control,
    job_search,
    live,
    openapi,
    queue_control,
    search_page,
    stats,
    views,
)
from web.idempotency import idempotent, upload_fingerprint

STATIC_DIR = Path(__file__).parent / "static"


def setup_routes(app: web.Application) -> None:
    app.add_routes(
        [
            web.post("/send-email", idempotent(views.queue_job("send_email", "Email queued!"))),
            web.get("/task-status/{task_id}", views.get_task_status),
            web.post("/upload", idempotent(views.upload, upload_fingerprint)),
            web.post("/register", idempotent(views.register)),
            web.post("/events", idempotent(views.queue_job("log_event"))),
            web.post(
                "/webhooks", idempotent(views.queue_job("deliver_webhook", "Webhook queued!"))
            ),
            web.post(
                "/reports/daily",
                idempotent(
                    views.queue_job("daily_report", "Daily report queued!", optional_body=True)
                ),
            ),
            web.post("/jobs", idempotent(views.queue_any_job)),
            web.get("/health", views.health),
            web.get("/jobs/{job_id}/events", live.job_events),
            web.get("/jobs/failed", job_control.list_failed),
            web.get("/jobs", job_search.search_jobs),
            web.post("/jobs/bulk", job_search.bulk_jobs),
            web.post("/jobs/{task_id}/retry", job_control.retry_failed),
            web.post("/jobs/{task_id}/replay", job_control.replay_job),
            web.delete("/jobs/{task_id}", job_control.cancel),
            web.get("/metrics", views.metrics),
            web.get("/stats/throughput", stats.throughput),
            web.get("/stats/functions", stats.by_function),
            web.get("/queue", queue_control.queue_state),
            web.post("/queue/pause", queue_control.pause_queue),
            web.post("/queue/resume", queue_control.resume_queue),
            web.post("/queue/drain", queue_control.drain_queue),
            web.get("/breakers", breaker_control.list_breakers),
            web.post("/breakers/{destination}/close", breaker_control.close_breaker),
            web.get("/crons", cron_control.list_crons),
            web.post("/crons/{name}/pause", cron_control.pause_cron),
            web.post("/crons/{name}/resume", cron_control.resume_cron),
            # dashboard: HTML pages and form actions (web/dashboard.py, web/templates/)
            web.get("/dashboard", dashboard.overview),
            web.get("/dashboard/events", live.overview_events),
            web.get("/dashboard/sign-in", dashboard.sign_in_page),
            web.post("/dashboard/sign-in", dashboard.sign_in),
            web.post("/dashboard/sign-out", dashboard.sign_out),
            web.get("/dashboard/jobs/{job_id}", dashboard.job_page),
            web.get("/dashboard/upload", dashboard.upload_page),
            web.post("/dashboard/upload", views.upload),
            web.get("/dashboard/thumbnails/{name}", dashboard.thumbnail),
            web.get("/dashboard/mail", dashboard.mail_page),
            web.post("/dashboard/crons/{name}/run", dashboard.run_cron_now),
            web.post("/dashboard/crons/{name}/pause", dashboard.pause_cron),
            web.post("/dashboard/crons/{name}/resume", dashboard.resume_cron),
            web.post("/dashboard/breakers/{destination}/close", dashboard.close_breaker),
            web.post("/dashboard/queue/pause", dashboard.pause_queue),
            web.post("/dashboard/queue/resume", dashboard.resume_queue),
            web.post("/dashboard/jobs/{job_id}/retry", dashboard.retry_job),
            web.post("/dashboard/jobs/{job_id}/replay", dashboard.replay_job),
            web.post("/dashboard/jobs/{job_id}/delete", dashboard.delete_job),
            web.post("/dashboard/jobs/{job_id}/cancel", dashboard.cancel_job),
            web.get("/dashboard/search", search_page.search),
            web.get("/dashboard/search/confirm", search_page.confirm),
            web.post("/dashboard/search/bulk", search_page.bulk),
            web.static("/dashboard/static", STATIC_DIR),
            web.get("/openapi.json", openapi.openapi_json),
        ]
    )
    live.setup_live(app)
    app.on_startup.append(openapi.describe_api)
