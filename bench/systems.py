"""The systems under test: how to start each one's web app and worker, and how to read, from
Redis, when a job started and how many jobs are finished. This service and the issue-4
baselines are here; the issue-17 peers (taskiq, Dramatiq) are in bench/peers.py."""

from __future__ import annotations

import asyncio
import json
import os
import pickle
import sys
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from redis.asyncio import Redis

from bench.procs import Process
from jobs.registry import REGISTRY
from service.queue.enqueue import enqueue_job
from service.store.redis import open_pool
from settings import Settings

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "bench"
VENVS = BENCH / ".venvs"
WORK = BENCH / ".work"
TOKEN = "bench-token-0123456789abcdef"  # noqa: S105 - a throwaway token for a loopback bench


def base_env() -> dict[str, str]:
    keep = ("PATH", "HOME", "LANG", "LC_ALL", "TMPDIR")
    return {key: os.environ[key] for key in keep if key in os.environ}


@dataclass
class Ports:
    redis: int
    web: int
    smtp: int


@dataclass
class System:
    """One system: subclasses say how to run it and where its jobs leave traces in Redis."""

    ports: Ports
    name: str = ""
    label: str = ""
    headers: dict[str, str] = field(default_factory=dict)
    results_db: Redis | None = None  # set by the bench for systems that keep results apart
    # processes in the web's tree once every one has booted (a gunicorn master + its workers):
    # wrk's 50 keep-alive connections would otherwise all land on the first one up
    web_processes: int = 1
    results_apart = False  # keeps one result key per finished job in Redis database 1

    def results(self, redis: Redis) -> Redis:
        return self.results_db or redis

    def env(self) -> dict[str, str]:
        raise NotImplementedError

    def web_argv(self) -> list[str]:
        raise NotImplementedError

    def worker_argv(self) -> list[str]:
        raise NotImplementedError

    def cwd(self) -> Path:
        return ROOT

    def noop_worker(self) -> tuple[list[str], dict[str, str]]:
        """The command and extra environment of the worker that drains the no-op jobs."""
        return self.worker_argv(), {}

    async def noop_finished(self, redis: Redis, queued: int) -> int:
        """How many of the ``queued`` no-op jobs that worker has finished."""
        return await self.finished(redis, queued)

    def io_worker(self, concurrency: int) -> tuple[list[str], dict[str, str]]:
        """The command and extra environment of a worker running ``concurrency`` sleep jobs at
        once (the I/O drain, bench/io_drain.py)."""
        raise NotImplementedError

    async def enqueue_sleeps(self, count: int, seconds: float) -> None:
        """Queue ``count`` jobs that sleep ``seconds`` each, with the system's own client."""
        raise NotImplementedError

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.ports.web}"

    def start_web(self, tag: str) -> Process:
        return Process.start(
            f"{self.name}-web",
            self.web_argv(),
            env=self.env(),
            cwd=self.cwd(),
            log=WORK / "logs" / f"{self.name}-web-{tag}.log",
        )

    def start_worker(
        self, tag: str, argv: list[str] | None = None, env: dict[str, str] | None = None
    ) -> Process:
        return Process.start(
            f"{self.name}-worker",
            argv or self.worker_argv(),
            env={**self.env(), **(env or {})},
            cwd=self.cwd(),
            log=WORK / "logs" / f"{self.name}-worker-{tag}.log",
        )

    async def finished(self, redis: Redis, queued: int) -> int:
        """How many of the ``queued`` jobs are finished."""
        raise NotImplementedError

    async def started_at(self, redis: Redis, task_id: str) -> float | None:
        """When the job started (s since the epoch), once the system has recorded it."""
        raise NotImplementedError


# where this service's jobs wait: one sorted set per named queue and priority
QUEUE_KEYS = REGISTRY.layout(Settings()).all_keys()

# two web processes, as the Flask baseline runs two gunicorn workers
OUR_WEB_PROCESSES = 2


def arq_command() -> str:
    return str(Path(sys.executable).parent / "arq")


class Ours(System):
    """This service as shipped: ``python -m web`` and ``arq service.WorkerSettings``."""

    def __init__(self, ports: Ports) -> None:
        super().__init__(ports, "ours", "this service", {"Authorization": f"Bearer {TOKEN}"})
        self.web_processes = 1 + OUR_WEB_PROCESSES  # gunicorn's master + its workers

    def env(self) -> dict[str, str]:
        return {
            **base_env(),
            "REDIS_URL": f"redis://127.0.0.1:{self.ports.redis}/0",
            "API_TOKENS": TOKEN,
            # the bench sends far more than any real client may: limits off (see RESULTS.md)
            "RATE_LIMIT_PER_TOKEN": "",
            "RATE_LIMIT_PER_RECIPIENT": "",
            "WEB_PORT": str(self.ports.web),
            "WEB_PROCESSES": str(OUR_WEB_PROCESSES),
            "DATA_DIR": str(WORK / "data-ours"),
            "SMTP_HOST": "127.0.0.1",
            "SMTP_PORT": str(self.ports.smtp),
        }

    def web_argv(self) -> list[str]:
        return [sys.executable, "-m", "web"]

    def worker_argv(self) -> list[str]:
        # as `make worker` starts it
        return [arq_command(), "service.WorkerSettings", "--custom-log-dict", "service.LOGGING"]

    def io_worker(self, concurrency: int) -> tuple[list[str], dict[str, str]]:
        # the service's worker plus the bench-only bench_sleep job (bench/worker.py)
        argv = [
            arq_command(),
            "bench.worker.WorkerSettings",
            "--custom-log-dict",
            "service.LOGGING",
        ]
        return argv, {"WORKER_MAX_JOBS": str(concurrency)}

    async def enqueue_sleeps(self, count: int, seconds: float) -> None:
        # straight into Redis with the API's own enqueue script, as bench/scale.py queues:
        # bench_sleep is not in the web app's registry
        pool = await open_pool(Settings(redis_url=f"redis://127.0.0.1:{self.ports.redis}/0"))
        try:
            for first in range(0, count, 100):
                await asyncio.gather(
                    *(
                        enqueue_job(pool, "bench_sleep", uuid.uuid4().hex, {"seconds": seconds})
                        for _ in range(min(100, count - first))
                    )
                )
        finally:
            await pool.aclose(close_connection_pool=True)

    async def finished(self, redis: Redis, queued: int) -> int:
        # every named queue and priority (thumbnails wait in arq:queue:images)
        pipe = redis.pipeline(transaction=False)
        for key in QUEUE_KEYS:
            pipe.zcard(key)
        return queued - sum(int(n) for n in await pipe.execute())

    async def started_at(self, redis: Redis, task_id: str) -> float | None:
        raw = await redis.hget(f"jobsvc:meta:{task_id}", "started_at")  # type: ignore[misc]
        return int(raw) / 1000 if raw else None


class PlainArq(System):
    """arq at its defaults (max_jobs 10, poll 0.5 s, pickle) behind a minimal aiohttp app."""

    def __init__(self, ports: Ports) -> None:
        super().__init__(ports, "arq", "plain arq defaults")

    def cwd(self) -> Path:
        return BENCH / "baselines"

    def env(self) -> dict[str, str]:
        return {
            **base_env(),
            "BENCH_REDIS_URL": f"redis://127.0.0.1:{self.ports.redis}/0",
            "BENCH_WEB_PORT": str(self.ports.web),
            "SMTP_HOST": "127.0.0.1",
            "SMTP_PORT": str(self.ports.smtp),
        }

    def web_argv(self) -> list[str]:
        return [str(VENVS / "arq" / "bin" / "python"), "arq_app.py"]

    def worker_argv(self) -> list[str]:
        return [str(VENVS / "arq" / "bin" / "arq"), "arq_app.WorkerSettings"]

    async def finished(self, redis: Redis, queued: int) -> int:
        return queued - int(await redis.zcard("arq:queue"))

    async def started_at(self, redis: Redis, task_id: str) -> float | None:
        raw = await redis.get(f"arq:result:{task_id}")
        if raw is None:
            return None
        return int(pickle.loads(raw)["st"]) / 1000  # noqa: S301 - our own baseline's result


class FlaskCelery(System):
    """Flask under gunicorn (2 workers) + Celery (prefork, Redis broker and results)."""

    def __init__(self, ports: Ports) -> None:
        super().__init__(ports, "celery", "Flask + Celery")
        self.web_processes = 3  # gunicorn's master + 2 workers
        self.results_apart = True

    def cwd(self) -> Path:
        return BENCH / "baselines"

    def env(self) -> dict[str, str]:
        return {
            **base_env(),
            "BENCH_REDIS_URL_BROKER": f"redis://127.0.0.1:{self.ports.redis}/0",
            "BENCH_REDIS_URL_RESULTS": f"redis://127.0.0.1:{self.ports.redis}/1",
            "SMTP_HOST": "127.0.0.1",
            "SMTP_PORT": str(self.ports.smtp),
        }

    def web_argv(self) -> list[str]:
        return [
            str(VENVS / "celery" / "bin" / "gunicorn"),
            "-w",
            "2",
            "-b",
            f"127.0.0.1:{self.ports.web}",
            "flask_celery_app:app",
        ]

    def worker_argv(self) -> list[str]:
        return [
            str(VENVS / "celery" / "bin" / "celery"),
            "-A",
            "flask_celery_app.celery",
            "worker",
            "--loglevel=INFO",
        ]

    async def finished(self, redis: Redis, queued: int) -> int:
        return int(await self.results(redis).dbsize())  # one result key per finished task

    async def started_at(self, redis: Redis, task_id: str) -> float | None:
        raw = await self.results(redis).get(f"celery-task-meta-{task_id}")
        if raw is None:
            return None
        done = datetime.fromisoformat(json.loads(raw)["date_done"])
        if done.tzinfo is None:
            done = done.replace(tzinfo=UTC)
        return done.timestamp()  # the no-op job ends within a millisecond of its start
