"""Peer: Dramatiq with its Redis broker, jobs queued by Flask under gunicorn.

Run by bench/run.py in its own virtualenv (requirements-dramatiq.txt):
- ``gunicorn -w 2 dramatiq_app:app`` serves ``POST /events`` (queues the no-op job) and
  ``GET /health``;
- ``dramatiq dramatiq_app --processes 1 --threads N`` runs one worker process;
- ``python dramatiq_app.py enqueue-sleep COUNT SECONDS`` queues COUNT sleep jobs and exits.

BENCH_REDIS_URL_BROKER / _RESULTS pick the databases. Every job returns the time it started,
kept by Dramatiq's Results middleware under ``dramatiq-results:default:<actor>:<message id>``
unless BENCH_PEER_RESULTS is ``off``: the bench reads pickup latency from it and counts
finished jobs as result keys.
"""

import os
import sys
import time

import dramatiq
from dramatiq.brokers.redis import RedisBroker
from dramatiq.results import Results
from dramatiq.results.backends import RedisBackend
from flask import Flask, jsonify, request

broker = RedisBroker(url=os.environ["BENCH_REDIS_URL_BROKER"])
if os.environ.get("BENCH_PEER_RESULTS") != "off":
    broker.add_middleware(
        Results(
            backend=RedisBackend(
                url=os.environ["BENCH_REDIS_URL_RESULTS"], use_namespace_prefix_keys=True
            ),
            store_results=True,
            result_ttl=3_600_000,
        )
    )
dramatiq.set_broker(broker)
app = Flask(__name__)


@dramatiq.actor
def noop(event):
    return time.time()


@dramatiq.actor
def sleep(seconds):
    started = time.time()
    time.sleep(seconds)
    return started


@app.post("/events")
def post_event():
    message = noop.send(request.get_json()["event"])
    return jsonify(task_id=message.message_id), 202


@app.get("/health")
def health():
    return jsonify(status="ok")


if __name__ == "__main__" and sys.argv[1:2] == ["enqueue-sleep"]:
    for _ in range(int(sys.argv[2])):
        sleep.send(float(sys.argv[3]))
