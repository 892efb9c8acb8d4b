"""Peer: taskiq on Redis (its list or its stream broker) behind a minimal aiohttp app.

Run by bench/run.py in its own virtualenv (requirements-taskiq.txt):
- ``python taskiq_app.py`` serves ``POST /events`` (queues the no-op job) and ``GET /health``
  on BENCH_WEB_PORT;
- ``taskiq worker taskiq_app:broker --workers 1 --max-async-tasks N`` runs one worker process;
- ``python taskiq_app.py enqueue-sleep COUNT SECONDS`` queues COUNT sleep jobs and exits.

BENCH_TASKIQ_BROKER is ``list`` (ListQueueBroker) or ``stream`` (RedisStreamBroker);
BENCH_REDIS_URL_BROKER / _RESULTS pick the databases. Every job returns the time it started,
kept by taskiq-redis's result backend (JSON) unless BENCH_PEER_RESULTS is ``off``: the bench
reads pickup latency from it and counts finished jobs as result keys, as it does for Celery.
"""

import asyncio
import os
import sys
import time

from aiohttp import web
from taskiq.serializers import JSONSerializer
from taskiq_redis import ListQueueBroker, RedisAsyncResultBackend, RedisStreamBroker

BROKER_URL = os.environ["BENCH_REDIS_URL_BROKER"]
results = RedisAsyncResultBackend(
    os.environ["BENCH_REDIS_URL_RESULTS"], serializer=JSONSerializer(), result_ex_time=3600
)
if os.environ["BENCH_TASKIQ_BROKER"] == "stream":
    # the group reads the stream from its start: jobs queued before any worker ran count too
    broker = RedisStreamBroker(BROKER_URL, consumer_id="0")
else:
    # Its worker waits in a BRPOP without a timeout, and redis-py 8 reads with a 5 s socket
    # timeout by default: an idle worker process then dies every 5 s and is restarted, which
    # is no way to run it. socket_timeout=None lets the BRPOP wait, as it was written to.
    broker = ListQueueBroker(BROKER_URL, socket_timeout=None)
if os.environ.get("BENCH_PEER_RESULTS") != "off":
    broker = broker.with_result_backend(results)


@broker.task
async def noop(event):
    return time.time()


@broker.task
async def sleep(seconds):
    started = time.time()
    await asyncio.sleep(seconds)
    return started


async def post_event(request):
    data = await request.json()
    task = await noop.kiq(data["event"])
    return web.json_response({"task_id": task.task_id}, status=202)


async def health(request):
    return web.json_response({"status": "ok"})


async def broker_open(app):
    await broker.startup()
    yield
    await broker.shutdown()


def create_app():
    app = web.Application()
    app.cleanup_ctx.append(broker_open)
    app.add_routes([web.post("/events", post_event), web.get("/health", health)])
    return app


async def enqueue_sleeps(count, seconds):
    await broker.startup()
    try:
        for first in range(0, count, 100):
            await asyncio.gather(*(sleep.kiq(seconds) for _ in range(min(100, count - first))))
    finally:
        await broker.shutdown()


if __name__ == "__main__":
    if sys.argv[1:2] == ["enqueue-sleep"]:
        asyncio.run(enqueue_sleeps(int(sys.argv[2]), float(sys.argv[3])))
    else:
        web.run_app(create_app(), host="127.0.0.1", port=int(os.environ["BENCH_WEB_PORT"]))
