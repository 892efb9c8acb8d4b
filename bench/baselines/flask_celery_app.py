"""Baseline: the classic tutorial stack. Flask under gunicorn queues Celery tasks (Redis broker
and result backend, default prefork pool). Same routes and jobs as the service's bench paths.

Run by bench/run.py in its own virtualenv: ``gunicorn flask_celery_app:app`` and
``celery -A flask_celery_app worker``. BENCH_REDIS_URL_BROKER / _RESULTS pick the databases;
SMTP_HOST / SMTP_PORT the mail server.
"""

import json
import logging
import os
import smtplib
from email.message import EmailMessage

from celery import Celery
from flask import Flask, jsonify, request

celery = Celery(
    __name__,
    broker=os.environ["BENCH_REDIS_URL_BROKER"],
    backend=os.environ["BENCH_REDIS_URL_RESULTS"],
)
app = Flask(__name__)
logger = logging.getLogger("events")


@celery.task
def send_email(to, subject, body):
    message = EmailMessage()
    message["From"] = "jobs@example.com"
    message["To"] = to
    message["Subject"] = subject
    message.set_content(body)
    with smtplib.SMTP(os.environ["SMTP_HOST"], int(os.environ["SMTP_PORT"]), timeout=10) as smtp:
        smtp.send_message(message)
    return {"to": to}


@celery.task
def log_event(event):
    logger.info(json.dumps(event))


@app.post("/send-email")
def post_send_email():
    data = request.get_json()
    task = send_email.delay(data["to"], data["subject"], data["body"])
    return jsonify(message="Email queued!", task_id=task.id), 202


@app.post("/events")
def post_event():
    task = log_event.delay(request.get_json()["event"])
    return jsonify(task_id=task.id), 202


@app.get("/health")
def health():
    return jsonify(status="ok")
