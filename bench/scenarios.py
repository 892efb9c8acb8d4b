"""The scenarios of issue 4, each run against one system at a time with fresh processes.

Every function returns a flat dict of figures for one system in one repetition.
"""

from __future__ import annotations

import asyncio
import random
import re
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
from redis.asyncio import Redis

from bench.procs import Process, cpu_seconds, rss_mib, tree
from bench.systems import WORK, Ours, System, arq_command

EMAIL = {"to": "ann@example.com", "subject": "Hello", "body": "Hi Ann! " * 20}


@dataclass(frozen=True)
class Sizes:
    duration: int = 15  # s of wrk per front-door run
    connections: int = 50
    noop_jobs: int = 10_000
    probes: int = 30
    idle_seconds: float = 8.0
    emails: int = 1_000
    baseline_emails: int = 200  # the baselines drain ~20 emails/s: fewer keep the run short
    email_delay: float = 0.1
    images: int = 200
    image_threads: int = 2
    scale_jobs: int = 20_000  # drained by 1, 2 and 4 workers in the scale scenario
    backlog: int = 1_000_000  # queued jobs the scale scenario measures a deep queue with
    io_jobs: int = 1_000  # the I/O drain (issue 17): jobs that sleep io_sleep s each,
    io_sleep: float = 0.1
    io_concurrency: int = 100  # run io_concurrency at a time by one worker process


class Sampler:
    """Samples a process tree's RSS in the background; keeps the maximum."""

    def __init__(self, process: Process, every: float = 0.25) -> None:
        self.process, self.every, self.peak = process, every, 0.0
        self._task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        while True:
            self.peak = max(self.peak, rss_mib(self.process.pid))
            await asyncio.sleep(self.every)

    async def stop(self) -> float:
        self._task.cancel()
        self.peak = max(self.peak, rss_mib(self.process.pid))
        return self.peak


async def wait_for(
    check: Callable[[], Awaitable[bool]], within: float, what: str, every: float = 0.05
) -> None:
    deadline = time.monotonic() + within
    while not await check():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what}: not within {within} s")
        await asyncio.sleep(every)


async def web_ready(http: aiohttp.ClientSession, system: System, process: Process) -> None:
    async def answers() -> bool:
        if not process.alive():
            raise RuntimeError(f"{process.name} exited; see bench/.work/logs")
        try:
            async with http.get(system.url + "/health") as response:
                return response.status == 200
        except aiohttp.ClientError:
            return False

    await wait_for(answers, 60, f"{system.name} web start", every=0.1)

    async def all_booted() -> bool:
        return len(tree(process.pid)) >= system.web_processes

    await wait_for(all_booted, 60, f"{system.name} web processes", every=0.1)
    if system.web_processes > 1:
        await asyncio.sleep(1.0)  # a forked worker is listed before it accepts connections


async def post(http: aiohttp.ClientSession, system: System, path: str, body: Any) -> str:
    async with http.post(system.url + path, json=body, headers=system.headers) as response:
        if response.status != 202:
            raise RuntimeError(f"{system.name} {path}: {response.status} {await response.text()}")
        task_id: str = (await response.json())["task_id"]
        return task_id


async def post_many(
    http: aiohttp.ClientSession, system: System, path: str, bodies: list[Any], concurrency: int = 50
) -> tuple[list[str], float]:
    """POST every body with ``concurrency`` requests in flight; task ids and requests/s."""
    ids: list[str] = [""] * len(bodies)
    cursor = iter(range(len(bodies)))

    async def lane() -> None:
        for index in cursor:
            ids[index] = await post(http, system, path, bodies[index])

    started = time.perf_counter()
    await asyncio.gather(*(lane() for _ in range(concurrency)))
    return ids, len(bodies) / (time.perf_counter() - started)


@dataclass(frozen=True)
class Drained:
    """A drain's window, from the first finished job to the last (start-up left out)."""

    jobs: int  # finished within the window
    seconds: float
    worker_cpu: float  # s of CPU the worker's process tree used within the window

    @property
    def jobs_per_s(self) -> float:
        return self.jobs / self.seconds if self.seconds else float("nan")


async def drain(
    system: System,
    redis: Redis,
    queued: int,
    within: float,
    worker: Process,
    finished: Callable[[Redis, int], Awaitable[int]] | None = None,
) -> Drained:
    """Wait until ``queued`` jobs are finished; the window from the first finished to the last.

    ``finished`` counts them (the system's ``finished`` unless given). The worker's CPU is
    read from /proc at both ends of the window only: a scan of /proc per poll would cost the
    machine more than it tells.
    """
    count = finished or system.finished
    first_at, first_count, first_cpu = 0.0, 0, 0.0
    deadline = time.monotonic() + within
    while True:
        done = await count(redis, queued)
        now = time.perf_counter()
        if done and not first_at:
            first_at, first_count, first_cpu = now, done, cpu_seconds(worker.pid)
        if done >= queued:
            break
        if time.monotonic() > deadline or not worker.alive():
            raise RuntimeError(f"{system.name}: {done} of {queued} jobs finished (see logs)")
        await asyncio.sleep(0.01)
    return Drained(queued - first_count, now - first_at, cpu_seconds(worker.pid) - first_cpu)


# 1. Front door --------------------------------------------------------------------------------

_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1e3}


def _ms(text: str) -> float:
    number, unit = re.fullmatch(r"([\d.]+)(us|ms|s)", text).groups()  # type: ignore[union-attr]
    return float(number) * _UNITS[unit]


def parse_wrk(output: str) -> dict[str, float]:
    figures = {"rps": float(re.search(r"Requests/sec:\s+([\d.]+)", output).group(1))}  # type: ignore[union-attr]
    for name, pct in (("p50_ms", "50"), ("p99_ms", "99")):
        figures[name] = _ms(re.search(rf"^\s+{pct}%\s+(\S+)", output, re.M).group(1))  # type: ignore[union-attr]
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", output)
    figures["non_2xx"] = float(errors.group(1)) if errors else 0.0
    socket_errors = re.search(r"Socket errors: (.*)", output)
    figures["socket_errors"] = (
        float(sum(int(n) for n in re.findall(r"\d+", socket_errors.group(1))))
        if socket_errors
        else 0.0
    )
    return figures


def wrk_script(system: System) -> Path:
    headers = {"Content-Type": "application/json", **system.headers}
    lines = ['wrk.method = "POST"']
    lines += [f'wrk.headers["{key}"] = "{value}"' for key, value in headers.items()]
    # a new recipient per request, as real traffic has: no system may win by caching one
    # address's check (each wrk thread numbers its own, from its own start)
    lines += [
        "local threads, n = 0, 0",
        'function setup(thread) threads = threads + 1; thread:set("id", threads) end',
        "function init(args) n = id * 1000000000 end",
        "function request()",
        "  n = n + 1",
        '  local body = string.format(\'{"to": "user%d@example.com", "subject": "Hello", '
        '"body": "Hi Ann!"}\', n)',
        "  return wrk.format(nil, nil, nil, body)",
        "end",
    ]
    path = WORK / f"post-{system.name}.lua"
    path.write_text("\n".join(lines) + "\n")
    return path


async def front_door(
    http: aiohttp.ClientSession, system: System, redis: Redis, sizes: Sizes, tag: str
) -> dict[str, float]:
    web = system.start_web(tag)
    try:
        await web_ready(http, system, web)
        await post(http, system, "/send-email", EMAIL)
        idle = rss_mib(web.pid)
        sampler = Sampler(web)
        argv = [
            shutil.which("wrk") or "wrk", "-t2", f"-c{sizes.connections}",
            f"-d{sizes.duration}s", "--latency", "-s", str(wrk_script(system)),
            system.url + "/send-email",
        ]  # fmt: skip
        wrk = await asyncio.create_subprocess_exec(*argv, stdout=subprocess.PIPE)
        output, _ = await wrk.communicate()
        peak = await sampler.stop()
    finally:
        web.stop()
    (WORK / "logs" / f"{system.name}-wrk-{tag}.txt").write_text(output.decode())
    return {**parse_wrk(output.decode()), "web_rss_idle": idle, "web_rss_load": peak}


# 2. No-op throughput --------------------------------------------------------------------------


async def noop(
    http: aiohttp.ClientSession, system: System, redis: Redis, sizes: Sizes, tag: str
) -> dict[str, float]:
    web = system.start_web(tag)
    try:
        await web_ready(http, system, web)
        bodies = [{"event": {"type": "bench", "n": n}} for n in range(sizes.noop_jobs)]
        _, enqueue_rate = await post_many(http, system, "/events", bodies)
    finally:
        web.stop()
    worker = system.start_worker(tag, *system.noop_worker())
    try:
        sampler = Sampler(worker)
        drained = await drain(
            system, redis, sizes.noop_jobs, 600, worker, finished=system.noop_finished
        )
        cpu = cpu_seconds(worker.pid)  # start-up included: a few % of the total
        peak = await sampler.stop()
    finally:
        worker.stop()
    return {
        "jobs_per_s": drained.jobs_per_s,
        "enqueue_per_s": enqueue_rate,
        "worker_cpu_us_per_job": cpu / sizes.noop_jobs * 1e6,
        # within the drain's window only: start-up (imports, forks) left out
        "worker_cpu_s_per_1000": drained.worker_cpu / drained.jobs * 1000
        if drained.jobs
        else float("nan"),
        "worker_rss_load": peak,
    }


# 3. Pickup latency ----------------------------------------------------------------------------


async def _started(system: System, redis: Redis, task_id: str) -> float:
    deadline = time.monotonic() + 10
    while (started := await system.started_at(redis, task_id)) is None:
        if time.monotonic() > deadline:
            raise TimeoutError(f"{system.name}: job {task_id} did not start in 10 s")
        await asyncio.sleep(0.005)
    return started


async def pickup(
    http: aiohttp.ClientSession, system: System, redis: Redis, sizes: Sizes, tag: str
) -> dict[str, float]:
    web, worker = system.start_web(tag), system.start_worker(tag)
    try:
        await web_ready(http, system, web)
        await _started(system, redis, await post(http, system, "/events", {"event": {}}))
        latencies = []
        for n in range(sizes.probes):
            await asyncio.sleep(random.uniform(0.1, 0.3))
            sent = time.time()
            task_id = await post(http, system, "/events", {"event": {"probe": n}})
            latencies.append((await _started(system, redis, task_id) - sent) * 1000)
        await asyncio.sleep(1)  # let the last job's bookkeeping finish
        cpu_before, clock = cpu_seconds(worker.pid), time.perf_counter()
        await asyncio.sleep(sizes.idle_seconds)
        idle_cpu = (cpu_seconds(worker.pid) - cpu_before) / (time.perf_counter() - clock) * 100
        figures = {
            "pickup_p50_ms": statistics.median(latencies),
            "pickup_p99_ms": percentile(latencies, 99),
            "idle_cpu_pct": idle_cpu,
            "worker_rss_idle": rss_mib(worker.pid),
            "web_rss_idle": rss_mib(web.pid),
        }
    finally:
        worker.stop()
        web.stop()
    return figures


def percentile(values: list[float], pct: float) -> float:
    ordered = sorted(values)
    rank = max(0, min(len(ordered) - 1, round(pct / 100 * len(ordered) + 0.5) - 1))
    return ordered[rank]


# 4. I/O concurrency ---------------------------------------------------------------------------


async def emails(
    http: aiohttp.ClientSession,
    system: System,
    redis: Redis,
    sizes: Sizes,
    tag: str,
    *,
    sink_count: Callable[[], Awaitable[int]],
    concurrency: int,
) -> dict[str, float]:
    count = sizes.emails if isinstance(system, Ours) else sizes.baseline_emails
    web, worker = system.start_web(tag), system.start_worker(tag)
    try:
        await web_ready(http, system, web)
        before = await sink_count()
        await post(http, system, "/send-email", EMAIL)

        async def warmed() -> bool:
            return await sink_count() > before

        await wait_for(warmed, 30, f"{system.name} first email")
        before = await sink_count()
        sampler = Sampler(worker)
        cpu, started = cpu_seconds(worker.pid), time.perf_counter()
        bodies = [{**EMAIL, "to": f"user{n}@example.com"} for n in range(count)]
        await post_many(http, system, "/send-email", bodies)

        async def sent() -> bool:
            return await sink_count() - before >= count

        await wait_for(sent, 600, f"{system.name} emails", every=0.01)
        seconds = time.perf_counter() - started
        cpu = cpu_seconds(worker.pid) - cpu
        peak = await sampler.stop()
    finally:
        worker.stop()
        web.stop()
    floor = count * sizes.email_delay / concurrency
    return {
        "emails": count,
        "concurrency": concurrency,
        "seconds": seconds,
        "floor_s": floor,
        "x_floor": seconds / floor,
        "worker_cpu_ms_per_email": cpu / count * 1000,
        "worker_rss_load_io": peak,
    }


# 5. Images ------------------------------------------------------------------------------------


async def images(
    http: aiohttp.ClientSession, system: Ours, redis: Redis, sizes: Sizes, tag: str
) -> dict[str, float]:
    from bench.photos import make_photos

    photos = make_photos(WORK / "photos", sizes.images)
    web = system.start_web(tag)
    try:
        await web_ready(http, system, web)

        async def upload(path: Path) -> str:
            form = aiohttp.FormData()
            form.add_field("file", path.read_bytes(), filename=path.name)
            async with http.post(system.url + "/upload", data=form, headers=system.headers) as r:
                if r.status != 202:
                    raise RuntimeError(f"upload: {r.status} {await r.text()}")
                task_id: str = (await r.json())["task_id"]
                return task_id

        semaphore = asyncio.Semaphore(4)

        async def limited(path: Path) -> str:
            async with semaphore:
                return await upload(path)

        ids = await asyncio.gather(*(limited(path) for path in photos))
    finally:
        web.stop()
    lag_file = WORK / f"lag-{tag}.json"
    lag_file.unlink(missing_ok=True)
    argv = [arq_command(), "bench.lagprobe.WorkerSettings", "--custom-log-dict", "service.LOGGING"]
    worker = system.start_worker(tag, argv, {"BENCH_LAG_FILE": str(lag_file)})
    try:
        await wait_for(lambda: _all_done(system, redis, len(ids)), 600, "thumbnails", every=0.05)
    finally:
        worker.stop()
    return await _image_figures(redis, ids, lag_file)


async def _all_done(system: System, redis: Redis, count: int) -> bool:
    return await system.finished(redis, count) >= count


async def _image_figures(redis: Redis, ids: list[str], lag_file: Path) -> dict[str, float]:
    import json

    starts, ends, failed = [], [], 0
    for task_id in ids:
        meta = await redis.hgetall(f"jobsvc:meta:{task_id}")  # type: ignore[misc]
        starts.append(int(meta[b"started_at"]) / 1000)
        ends.append(int(meta[b"finished_at"]) / 1000)
        failed += meta.get(b"outcome") != b"success"
    first, last = min(starts), max(ends)
    lags = [lag for at, lag in json.loads(lag_file.read_text()) if first <= at <= last]
    return {
        "images_per_s": len(ids) / (last - first),
        "failed": float(failed),
        "lag_p99_ms": percentile(lags, 99) if lags else float("nan"),
        "lag_max_ms": max(lags) if lags else float("nan"),
    }


async def raw_pillow(sizes: Sizes) -> dict[str, float]:
    import json

    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bench.photos", str(WORK / "photos"), str(sizes.images),
        str(sizes.image_threads), stdout=subprocess.PIPE, cwd=Path(__file__).parent.parent,
    )  # fmt: skip
    output, _ = await process.communicate()
    return {"images_per_s": float(json.loads(output)["images_per_s"])}
