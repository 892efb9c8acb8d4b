"""The peers of issue 17: taskiq (list broker, stream broker) and Dramatiq, one worker process each.

Each runs from its own virtualenv (bench/.venvs/taskiq, bench/.venvs/dramatiq; the pins are in
bench/baselines/requirements-*.txt) with the app in bench/baselines/: a no-op job and a sleep
job, queued by a minimal web app (``POST /events``) or by the app's own ``enqueue-sleep``
command. Every job returns the time it started, kept by the peer's own Redis result backend
in database 1: pickup latency is read from there, and finished jobs are counted as result keys
(as for Celery).

Except in the no-op drain: there the peers run without a result backend, at their fastest
(keeping results cost taskiq's stream broker about a third of its CPU per no-op job in a
small run), and finished jobs are counted from each broker's own keys instead. This
service's status records stay on there: its figures are the product's as shipped, theirs
the lightest a user could run.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

from redis.asyncio import Redis

from bench.systems import BENCH, VENVS, Ports, System, base_env

APPS = BENCH / "baselines"
QUEUE = "taskiq"  # taskiq-redis's default queue: a list, or a stream with a group of that name
# Dramatiq's worker threads outside the I/O drain: what shared/PEERS.md measured, and about
# what one process on 2 cores runs well with the GIL
DRAMATIQ_THREADS = 8


class Peer(System):
    """A peer: its virtualenv, its app module in bench/baselines/, its results in database 1."""

    venv = ""

    def __init__(self, ports: Ports, name: str, label: str) -> None:
        super().__init__(ports, name, label)
        self.results_apart = True

    def cwd(self) -> Path:
        return APPS

    def bin(self, command: str) -> str:
        return str(VENVS / self.venv / "bin" / command)

    def env(self) -> dict[str, str]:
        return {
            **base_env(),
            "BENCH_REDIS_URL_BROKER": f"redis://127.0.0.1:{self.ports.redis}/0",
            "BENCH_REDIS_URL_RESULTS": f"redis://127.0.0.1:{self.ports.redis}/1",
            "BENCH_WEB_PORT": str(self.ports.web),
        }

    async def run_app(self, *args: str) -> None:
        """``python <app>.py ARGS`` in the peer's virtualenv; fails loudly if it fails."""
        process = await asyncio.create_subprocess_exec(
            self.bin("python"), f"{self.venv}_app.py", *args, env=self.env(), cwd=self.cwd()
        )
        if await asyncio.wait_for(process.wait(), 120):
            raise RuntimeError(f"{self.name}: {' '.join(args)} failed")

    async def enqueue_sleeps(self, count: int, seconds: float) -> None:
        await self.run_app("enqueue-sleep", str(count), str(seconds))

    async def finished(self, redis: Redis, queued: int) -> int:
        return int(await self.results(redis).dbsize())

    def noop_worker(self) -> tuple[list[str], dict[str, str]]:
        return self.worker_argv(), {"BENCH_PEER_RESULTS": "off"}


class Taskiq(Peer):
    """taskiq 0.13 with taskiq-redis: one worker process, ``--max-async-tasks`` as this
    service's WORKER_MAX_JOBS; ``broker`` is ``list`` or ``stream``."""

    venv = "taskiq"

    def __init__(self, ports: Ports, broker: str, max_async_tasks: int) -> None:
        super().__init__(ports, f"taskiq_{broker}", f"taskiq, {broker} broker")
        self.broker, self.max_async_tasks = broker, max_async_tasks

    def env(self) -> dict[str, str]:
        return {**super().env(), "BENCH_TASKIQ_BROKER": self.broker}

    def web_argv(self) -> list[str]:
        return [self.bin("python"), "taskiq_app.py"]

    def _worker(self, tasks: int) -> list[str]:
        return [self.bin("taskiq"), "worker", "taskiq_app:broker", "--workers", "1",
                "--max-async-tasks", str(tasks)]  # fmt: skip

    def worker_argv(self) -> list[str]:
        return self._worker(self.max_async_tasks)

    def io_worker(self, concurrency: int) -> tuple[list[str], dict[str, str]]:
        return self._worker(concurrency), {}

    async def started_at(self, redis: Redis, task_id: str) -> float | None:
        raw = await self.results(redis).get(task_id)
        return float(json.loads(raw)["return_value"]) if raw else None

    async def noop_finished(self, redis: Redis, queued: int) -> int:
        if self.broker == "stream":  # acknowledged once run: read, less those still pending
            (group,) = await redis.xinfo_groups(QUEUE)
            return int(group["entries-read"] or 0) - int(group["pending"])
        # The list broker leaves no trace of a job once popped: popped counts as finished,
        # which runs up to --max-async-tasks jobs ahead (in taskiq's favour, by at most
        # that many jobs' time at the end of the drain)
        return queued - int(await redis.llen(QUEUE))  # type: ignore[misc]


class Dramatiq(Peer):
    """Dramatiq 2.2 with its Redis broker: one worker process of DRAMATIQ_THREADS threads
    (the I/O drain's concurrency in threads there); Flask under gunicorn queues its jobs."""

    venv = "dramatiq"

    def __init__(self, ports: Ports) -> None:
        super().__init__(ports, "dramatiq", "Dramatiq, 1 process")
        self.web_processes = 3  # gunicorn's master + 2 workers, as the Celery baseline

    def web_argv(self) -> list[str]:
        return [self.bin("gunicorn"), "-w", "2", "-b", f"127.0.0.1:{self.ports.web}",
                "dramatiq_app:app"]  # fmt: skip

    def _worker(self, threads: int) -> list[str]:
        return [self.bin("dramatiq"), "dramatiq_app", "--processes", "1", "--threads", str(threads)]

    def worker_argv(self) -> list[str]:
        return self._worker(DRAMATIQ_THREADS)

    def io_worker(self, concurrency: int) -> tuple[list[str], dict[str, str]]:
        return self._worker(concurrency), {}

    async def started_at(self, redis: Redis, task_id: str) -> float | None:
        raw = await self.results(redis).lindex(f"dramatiq-results:default:noop:{task_id}", 0)  # type: ignore[misc]
        return float(json.loads(raw)) if raw else None

    async def noop_finished(self, redis: Redis, queued: int) -> int:
        # a message stays in this hash until the worker acknowledges it, after running it
        return queued - int(await redis.hlen("dramatiq:default.msgs"))  # type: ignore[misc]


def peers(ports: Ports, max_jobs: int) -> list[System]:
    """Every peer, taskiq's workers running as many jobs at once as this service's."""
    return [Taskiq(ports, "list", max_jobs), Taskiq(ports, "stream", max_jobs), Dramatiq(ports)]
