"""EMAIL_RATE_LIMIT measured at the SMTP sink: worker processes drain queued emails at a limit.

``python -m bench.rate_drain [--emails 1000] [--workers 4] [--limit 20]`` starts a private
redis-server, an SMTP sink in this process (noting when each message arrives, at the end of
its DATA) and ``--workers`` worker processes (``arq service.WorkerSettings``, as users start
them) with ``EMAIL_RATE_LIMIT=<limit>/second``, queues ``--emails`` send_email jobs, and
waits until the sink holds them all. It prints the worst one-second window at the sink (the
most messages that arrived within any one second, wherever it starts), the drain time against
its floor (emails / limit), and the postponements per email the workers' metrics counted.
Everything runs on loopback; the wait is bounded (DEADLINE). Not part of ``make test``.
"""

from __future__ import annotations

import argparse
import asyncio
import bisect
import os
import re
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import aiohttp
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, Envelope, Session

from bench.procs import Process
from bench.run import free_port, start_redis, wait_redis
from bench.sink import DelayingSink
from service.queue.enqueue import enqueue
from service.store.redis import open_pool
from settings import Settings

ROOT = Path(__file__).resolve().parent.parent
DEADLINE = 300.0  # seconds the drain may take at most
POSTPONED = re.compile(
    r'^jobservice_jobs_postponed_total\{function="send_email",reason="rate_limit"\} (\S+)$',
    re.MULTILINE,
)


def worst_window(times: Sequence[float], seconds: float) -> int:
    """The most of ``times`` that fall within any ``seconds`` long window [t, t + seconds)."""
    ordered = sorted(times)
    return max(
        (bisect.bisect_left(ordered, t + seconds) - i for i, t in enumerate(ordered)), default=0
    )


class TimingSink(DelayingSink):
    """The bench's SMTP sink (PIPELINING, no delay), noting when each message arrives."""

    def __init__(self) -> None:
        super().__init__(0.0)
        self.arrived: list[float] = []

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        self.arrived.append(time.time())
        return await super().handle_DATA(server, session, envelope)


async def _postponed(ports: Sequence[int]) -> float:
    total = 0.0
    async with aiohttp.ClientSession() as http:
        for port in ports:
            async with http.get(f"http://127.0.0.1:{port}/metrics") as response:
                found = POSTPONED.search(await response.text())
            total += float(found.group(1)) if found else 0.0
    return total


async def _wait_for_metrics(ports: Sequence[int]) -> None:
    """Every worker is up once its /metrics answers (it serves them from its start-up)."""
    deadline = time.monotonic() + 60
    async with aiohttp.ClientSession() as http:
        for port in ports:
            while True:
                try:
                    async with http.get(f"http://127.0.0.1:{port}/metrics"):
                        break
                except aiohttp.ClientError:
                    if time.monotonic() > deadline:
                        sys.exit(f"the worker serving metrics on {port} did not start")
                    await asyncio.sleep(0.1)


async def drain(emails: int, workers: int, limit: int, work: Path) -> None:
    redis_port, smtp_port = free_port(), free_port()
    redis_process = start_redis(redis_port)
    sink = TimingSink()
    controller = Controller(sink, hostname="127.0.0.1", port=smtp_port)
    controller.start()
    started: list[Process] = []
    settings = Settings(redis_url=f"redis://127.0.0.1:{redis_port}/0", data_dir=work / "data")
    pool = await open_pool(settings)
    try:
        await wait_redis(pool)
        ports = [free_port() for _ in range(workers)]
        for n, port in enumerate(ports):
            env = {
                **os.environ,
                "REDIS_URL": settings.redis_url,
                "REDIS_EPHEMERAL": "true",
                "DATA_DIR": str(work / "data"),
                "SMTP_HOST": "127.0.0.1",
                "SMTP_PORT": str(smtp_port),
                "EMAIL_RATE_LIMIT": f"{limit}/second",
                "WORKER_METRICS_PORT": str(port),
                "LOG_LEVEL": "WARNING",
            }
            argv = [sys.executable, "-m", "arq", "service.WorkerSettings"]
            log = work / "logs" / f"worker{n}.log"
            started.append(Process.start(f"worker{n}", argv, env=env, cwd=ROOT, log=log))
        await _wait_for_metrics(ports)
        queued_at = time.time()
        for n in range(emails):
            body = {"to": f"u{n}@example.com", "subject": "Hello", "body": "Hi!\n"}
            await enqueue(pool, "send_email", body)
        deadline = time.monotonic() + DEADLINE
        while len(sink.arrived) < emails and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
        postponed = await _postponed(ports)
    finally:
        for process in started:
            process.stop()
        await pool.aclose()
        controller.stop()
        redis_process.stop()
    arrived = sorted(sink.arrived)
    floor = emails / limit
    print(f"{workers} workers, EMAIL_RATE_LIMIT={limit}/second, {emails} emails queued")
    print(f"delivered: {len(arrived)} of {emails}")
    if arrived:
        drained = arrived[-1] - queued_at
        print(f"worst one-second window at the sink: {worst_window(arrived, 1.0)} (limit {limit})")
        print(f"drain time: {drained:.2f} s (floor {floor:.0f} s, x{drained / floor:.3f})")
        print(f"first to last arrival: {arrived[-1] - arrived[0]:.2f} s")
    print(f"postponements per email: {postponed / emails:.3f} ({postponed:.0f} in all)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--emails", type=int, default=1000)
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--limit", type=int, default=20, help="emails per second")
    options = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="rate-drain-") as work:
        asyncio.run(drain(options.emails, options.workers, options.limit, Path(work)))


if __name__ == "__main__":
    main()
