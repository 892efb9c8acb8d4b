"""Which workers are alive: each worker writes arq's health-check line under its own key.

arq's default is one key per queue, which several workers overwrite in turn; a key per worker
(``<queue>:health-check:<host>:<pid>``) lets the dashboard list each one. Beside it, a small
record written at start-up says what arq's line does not: the worker's ``max_jobs``.
"""

from __future__ import annotations

import json
import os
import re
import socket
import time
from dataclasses import dataclass

from redis.asyncio import Redis

from service.store import keys

RECORD_TTL = 7 * 86_400  # a killed worker's record outlives its health key; this bounds it
FORGET_AFTER = 3600  # seconds: a registered worker with no health key for this long is dropped
ONGOING = re.compile(r"j_ongoing=(\d+)")
QUEUES = re.compile(r"queues=([a-z0-9_,]+)")  # the named queues it serves (WORKER_QUEUES)


def worker_name() -> str:
    """This process's name among the workers: host and pid."""
    return f"{socket.gethostname()}:{os.getpid()}"


def health_key(queue_name: str, name: str) -> str:
    return f"{queue_name}:health-check:{name}"


@dataclass(frozen=True, slots=True)
class WorkerState:
    """One live worker, as its health-check line and start-up record describe it."""

    name: str
    last_check: str
    running: int | None
    max_jobs: int | None
    started_at: float | None  # seconds since the epoch
    queues: tuple[str, ...] = ("default",)  # the named queues it takes jobs from

    def serves(self, queue: str) -> bool:
        return queue in self.queues


async def register(redis: Redis, name: str, max_jobs: int) -> None:
    """Called at worker start-up: list the worker and record what its health line leaves out."""
    now = time.time()
    record = json.dumps({"max_jobs": max_jobs, "started_at": now})
    async with redis.pipeline(transaction=False) as pipe:
        pipe.set(keys.worker_record(name), record, ex=RECORD_TTL)
        pipe.zadd(keys.workers(), {name: now})
        await pipe.execute()


async def unregister(redis: Redis, name: str) -> None:
    async with redis.pipeline(transaction=False) as pipe:
        pipe.delete(keys.worker_record(name))
        pipe.zrem(keys.workers(), name)
        await pipe.execute()


async def alive(redis: Redis, queue_name: str) -> list[WorkerState]:
    """Registered workers whose health key has not expired, by name.

    Workers that died without unregistering are forgotten once silent for FORGET_AFTER.
    """
    names = [raw.decode() for raw in await redis.zrange(keys.workers(), 0, -1)]
    if not names:
        return []
    async with redis.pipeline(transaction=False) as pipe:
        for name in names:
            pipe.get(health_key(queue_name, name))
            pipe.get(keys.worker_record(name))
        replies = await pipe.execute()
    found, silent = [], []
    for name, line, record in zip(names, replies[::2], replies[1::2], strict=True):
        if line is None:
            silent.append(name)
        else:
            found.append(_state(name, line.decode(), record))
    if found:
        await redis.zadd(keys.workers(), {worker.name: time.time() for worker in found})
    if silent:
        await _forget_long_silent(redis, silent)
    return sorted(found, key=lambda worker: worker.name)


async def _forget_long_silent(redis: Redis, names: list[str]) -> None:
    cutoff = time.time() - FORGET_AFTER
    scores = await redis.zmscore(keys.workers(), names)
    stale = [name for name, score in zip(names, scores, strict=True) if score and score < cutoff]
    if stale:
        await redis.zrem(keys.workers(), *stale)


def _state(name: str, line: str, record: bytes | None) -> WorkerState:
    ongoing = ONGOING.search(line)
    queues = QUEUES.search(line)
    info = json.loads(record) if record else {}
    return WorkerState(
        name=name,
        last_check=line,
        running=int(ongoing.group(1)) if ongoing else None,
        max_jobs=info.get("max_jobs"),
        started_at=info.get("started_at"),
        queues=tuple(queues.group(1).split(",")) if queues else ("default",),
    )
