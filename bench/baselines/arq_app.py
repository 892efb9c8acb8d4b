"""Baseline: plain arq at its defaults behind a minimal aiohttp app (no uvloop, pickle).

``python arq_app.py`` serves the API on BENCH_WEB_PORT; ``arq arq_app.WorkerSettings`` runs
the worker (max_jobs 10, poll_delay 0.5 s: arq's defaults). BENCH_REDIS_URL picks Redis.
"""

import json
import logging
import os
from email.message import EmailMessage

import aiosmtplib
from aiohttp import web
from arq import create_pool
from arq.connections import RedisSettings

REDIS = RedisSettings.from_dsn(os.environ["BENCH_REDIS_URL"])
logger = logging.getLogger("events")


async def send_email(ctx, to, subject, body):
    message = EmailMessage()
    message["From"] = "jobs@example.com"
    message["To"] = to
    message["Subject"] = subject
    message.set_content(body)
    await aiosmtplib.send(
        message, hostname=os.environ["SMTP_HOST"], port=int(os.environ["SMTP_PORT"]), timeout=10
    )
    return {"to": to}


async def log_event(ctx, event):
    logger.info(json.dumps(event))


class WorkerSettings:
    functions = [send_email, log_event]
    redis_settings = REDIS


async def post_send_email(request):
    data = await request.json()
    job = await request.app["redis"].enqueue_job(
        "send_email", data["to"], data["subject"], data["body"]
    )
    return web.json_response({"message": "Email queued!", "task_id": job.job_id}, status=202)


async def post_event(request):
    data = await request.json()
    job = await request.app["redis"].enqueue_job("log_event", data["event"])
    return web.json_response({"task_id": job.job_id}, status=202)


async def health(request):
    return web.json_response({"status": "ok"})


async def redis_pool(app):
    app["redis"] = await create_pool(REDIS)
    yield
    await app["redis"].aclose()


def create_app():
    app = web.Application()
    app.cleanup_ctx.append(redis_pool)
    app.add_routes(
        [
            web.post("/send-email", post_send_email),
            web.post("/events", post_event),
            web.get("/health", health),
        ]
    )
    return app


if __name__ == "__main__":
    web.run_app(create_app(), host="127.0.0.1", port=int(os.environ["BENCH_WEB_PORT"]))
