"""``make bench``: this service against Flask + Celery, plain arq, taskiq and Dramatiq, in one run.

Sets up the other systems' virtualenvs (bench/.venvs), a private redis-server and an SMTP sink
on free loopback ports, runs the scenarios of issues 4 and 17 over several repetitions with
the systems' order rotated in each, and writes bench/RESULTS.md and bench/results.png. Only
ratios taken within one run mean anything: the machine is shared and noisy.

Quick run: ``make bench BENCH_ARGS="--quick"``; every size is also an option (``--help``).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shlex
import shutil
import socket
import subprocess
import sys
import time
from dataclasses import asdict, fields
from pathlib import Path
from typing import Any

import aiohttp
from redis.asyncio import Redis
from redis.exceptions import RedisError

from bench import report, scale, scenarios
from bench.io_drain import io_drain
from bench.peers import peers
from bench.procs import Process
from bench.scenarios import Sizes
from bench.systems import BENCH, VENVS, WORK, FlaskCelery, Ours, PlainArq, Ports, System
from settings import Settings

QUICK = Sizes(
    duration=5, noop_jobs=2_000, probes=10, idle_seconds=4, emails=300, baseline_emails=60,
    images=40, scale_jobs=4_000, backlog=100_000,
)  # fmt: skip


SCENARIOS = ("front_door", "noop", "pickup", "io", "emails", "images", "scale")
# The baselines of issue 4 have no taskiq or Dramatiq counterpart in these, nor in images and
# scale (this service's own); the I/O drain is issue 17's, against the peers only.
BASELINES_ONLY = {"front_door", "emails"}
PEERS_ONLY = {"io"}
VENV_NAMES = ("celery", "arq", "taskiq", "dramatiq")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def ensure_tools() -> None:
    """wrk from apt when missing; the other systems' virtualenvs when missing or out of date."""
    if shutil.which("wrk") is None:
        print("installing wrk (apt-get)", flush=True)
        apt = ["apt-get", "install", "-y", "wrk"]
        if os.geteuid() != 0:
            apt = ["sudo", *apt]
        subprocess.run(apt, check=True, stdout=subprocess.DEVNULL)
    for name in VENV_NAMES:
        requirements = BENCH / "baselines" / f"requirements-{name}.txt"
        venv, stamp = VENVS / name, VENVS / name / ".installed"
        if stamp.exists() and stamp.read_text() == requirements.read_text():
            continue
        print(f"building the {name} virtualenv", flush=True)
        subprocess.run([sys.executable, "-m", "venv", "--clear", str(venv)], check=True)
        pip = [str(venv / "bin" / "python"), "-m", "pip", "install", "--quiet"]
        subprocess.run([*pip, "-r", str(requirements)], check=True)
        stamp.write_text(requirements.read_text())


def start_redis(port: int) -> Process:
    binary = shutil.which("redis-server")
    if binary is None:
        sys.exit("redis-server is not installed: sudo apt-get install redis-server")
    argv = [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
    return Process.start(
        "redis", argv, env=dict(os.environ), cwd=WORK, log=WORK / "logs" / "redis.log"
    )


async def wait_redis(redis: Redis) -> None:
    for _ in range(100):
        try:
            await redis.ping()
            return
        except (OSError, RedisError):
            await asyncio.sleep(0.1)
    sys.exit("the private redis-server did not start")


def record(results: dict[str, Any], scenario: str, system: str, figures: dict[str, float]) -> None:
    for metric, value in figures.items():
        results.setdefault(scenario, {}).setdefault(system, {}).setdefault(metric, []).append(value)


async def run(sizes: Sizes, reps: int, only: set[str]) -> dict[str, Any]:
    ports = Ports(redis=free_port(), web=free_port(), smtp=free_port())
    sink_port = free_port()
    max_jobs = Settings().worker_max_jobs
    systems: list[System] = [
        Ours(ports), FlaskCelery(ports), PlainArq(ports), *peers(ports, max_jobs)
    ]  # fmt: skip
    redis_process = start_redis(ports.redis)
    sink = Process.start(
        "sink", [sys.executable, "-m", "bench.sink", str(ports.smtp), str(sink_port),
                 str(sizes.email_delay)],
        env=dict(os.environ), cwd=BENCH.parent, log=WORK / "logs" / "sink.log",
    )  # fmt: skip
    redis = Redis(port=ports.redis)
    results_db = Redis(port=ports.redis, db=1)
    for system in systems:
        if system.results_apart:
            system.results_db = results_db
    concurrency = {"ours": max_jobs, "celery": os.cpu_count() or 1, "arq": 10}
    results: dict[str, Any] = {"started": time.time(), "sizes": asdict(sizes), "reps": reps}
    # the report says how it was run: `make bench` only when run without arguments
    arguments = " ".join(shlex.quote(argument) for argument in sys.argv[1:])
    results["command"] = f".venv/bin/python -m bench.run {arguments}" if arguments else "make bench"
    try:
        await wait_redis(redis)
        async with aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=200), timeout=aiohttp.ClientTimeout(total=60)
        ) as http:

            async def sink_count() -> int:
                async with http.get(f"http://127.0.0.1:{sink_port}/") as response:
                    accepted: int = (await response.json())["accepted"]
                    return accepted

            await scenarios.wait_for(_answers(sink_count), 30, "SMTP sink")
            for rep in range(reps):
                turn = rep % len(systems)
                order = systems[turn:] + systems[:turn]  # who goes first rotates
                for scenario in SCENARIOS:
                    if only and scenario not in only:
                        continue
                    for target in _targets(scenario, order, rep):
                        await redis.flushall()
                        tag = f"{scenario}-{rep}"
                        name = target.name if target else "raw_pillow"
                        print(f"rep {rep + 1}/{reps} {scenario:<10} {name}", flush=True)
                        figures = await _one(
                            scenario, target, http, redis, sizes, tag, sink_count, concurrency,
                            redis_process.pid,
                        )  # fmt: skip
                        print("   ", json.dumps({k: round(v, 2) for k, v in figures.items()}))
                        record(results, scenario, name, figures)
    finally:
        await redis.aclose()
        await results_db.aclose()
        sink.stop()
        redis_process.stop()
    results["finished"] = time.time()
    return results


def _targets(scenario: str, order: list[System], rep: int) -> list[System | None]:
    """The systems a scenario runs, in this repetition's order (None: raw Pillow)."""
    ours = next(system for system in order if isinstance(system, Ours))
    if scenario == "images":
        return [None, ours] if rep % 2 else [ours, None]
    if scenario == "scale":  # this service's own scaling: no baseline
        return [ours]
    if scenario in BASELINES_ONLY:
        return [s for s in order if isinstance(s, Ours | FlaskCelery | PlainArq)]
    if scenario in PEERS_ONLY:
        return [s for s in order if not isinstance(s, FlaskCelery | PlainArq)]
    return list(order)


def _answers(count: Any) -> Any:
    async def check() -> bool:
        try:
            await count()
            return True
        except aiohttp.ClientError:
            return False

    return check


async def _one(
    scenario: str,
    system: System | None,
    http: aiohttp.ClientSession,
    redis: Redis,
    sizes: Sizes,
    tag: str,
    sink_count: Any,
    concurrency: dict[str, int],
    redis_pid: int,
) -> dict[str, float]:
    if system is None:
        return await scenarios.raw_pillow(sizes)
    if scenario == "front_door":
        return await scenarios.front_door(http, system, redis, sizes, tag)
    if scenario == "noop":
        return await scenarios.noop(http, system, redis, sizes, tag)
    if scenario == "pickup":
        return await scenarios.pickup(http, system, redis, sizes, tag)
    if scenario == "io":
        return await io_drain(system, redis, sizes, tag)
    if scenario == "emails":
        return await scenarios.emails(
            http, system, redis, sizes, tag,
            sink_count=sink_count, concurrency=concurrency[system.name],
        )  # fmt: skip
    assert isinstance(system, Ours)
    if scenario == "scale":
        return await scale.scale(
            http, system, redis, redis_pid, sizes.scale_jobs, sizes.backlog, tag
        )
    return await scenarios.images(http, system, redis, sizes, tag)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--reps", type=int, default=int(os.environ.get("BENCH_REPS", "3")))
    parser.add_argument("--quick", action="store_true", help="small sizes, one repetition")
    parser.add_argument("--only", default="", help="comma-separated scenarios to run")
    parser.add_argument("--out", type=Path, default=BENCH, help="where RESULTS.md goes")
    for field in fields(Sizes):
        parser.add_argument(f"--{field.name.replace('_', '-')}", type=type(field.default))
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    base = QUICK if args.quick else Sizes()
    overrides = {f.name: getattr(args, f.name) for f in fields(Sizes) if getattr(args, f.name)}
    sizes = Sizes(**{**asdict(base), **overrides})
    reps = 1 if args.quick and "--reps" not in sys.argv else args.reps
    WORK.mkdir(parents=True, exist_ok=True)
    ensure_tools()
    results = asyncio.run(run(sizes, reps, {s for s in args.only.split(",") if s}))
    (WORK / "results.json").write_text(json.dumps(results, indent=1))
    report.write(results, args.out)
    print(f"wrote {args.out / 'RESULTS.md'} and {args.out / 'results.png'}")


if __name__ == "__main__":
    main()
