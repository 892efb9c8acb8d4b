"""bench/RESULTS.md and bench/results.png from one run's figures.

Ratios are taken within each repetition (this service against a baseline run minutes apart on
the same machine), then summarised as median [min-max] over the repetitions. The comparison
with the best peer (taskiq, Dramatiq) is bench/peer_report.py's.
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench import peer_report
from bench.systems import VENVS

LABELS = {
    "ours": "this service",
    "celery": "Flask + Celery",
    "arq": "plain arq defaults",
    "taskiq_list": "taskiq, list broker",
    "taskiq_stream": "taskiq, stream broker",
    "dramatiq": "Dramatiq, 1 process",
    "taskiq": "taskiq",  # its virtualenv, in the versions list
    "raw_pillow": "raw Pillow thread pool",
}
Series = list[float]


def span(values: Series, digits: int = 1) -> str:
    """``median [min-max]``, or the single value."""
    values = [v for v in values if v == v]  # NaN-free
    if not values:
        return "n/a"
    fmt = f"{{:,.{digits}f}}"
    if len(values) == 1:
        return fmt.format(values[0])
    low, mid, high = min(values), statistics.median(values), max(values)
    return f"{fmt.format(mid)} [{fmt.format(low)}-{fmt.format(high)}]"


@dataclass
class Target:
    name: str
    values: Series  # per repetition
    goal: str
    passes: Callable[[float], bool]
    digits: int = 2

    @property
    def median(self) -> float:
        clean = [v for v in self.values if v == v]
        return statistics.median(clean) if clean else float("nan")

    @property
    def verdict(self) -> str:
        if not self.values or self.median != self.median:
            return "not run"
        return "**pass**" if self.passes(self.median) else "**FAIL**"


def _get(results: dict[str, Any], scenario: str, system: str, metric: str) -> Series:
    series: Series = results.get(scenario, {}).get(system, {}).get(metric, [])
    return series


def _ratio(a: Series, b: Series) -> Series:
    return [x / y for x, y in zip(a, b, strict=False) if y]


def targets(results: dict[str, Any]) -> list[Target]:
    def ours(scenario: str, metric: str) -> Series:
        return _get(results, scenario, "ours", metric)

    def other(scenario: str, system: str, metric: str) -> Series:
        return _get(results, scenario, system, metric)

    rps = _ratio(ours("front_door", "rps"), other("front_door", "celery", "rps"))
    p99 = _ratio(ours("front_door", "p99_ms"), other("front_door", "celery", "p99_ms"))
    return [
        Target("Front door req/s, x Flask + Celery", rps, ">= 3", lambda v: v >= 3),
        Target("Front door p99, / Flask + Celery's p99", p99, "< 1", lambda v: v < 1),
        Target("No-op jobs/s, x Celery", _ratio(ours("noop", "jobs_per_s"),
               other("noop", "celery", "jobs_per_s")), ">= 4", lambda v: v >= 4),
        Target("No-op jobs/s, x plain arq defaults", _ratio(ours("noop", "jobs_per_s"),
               other("noop", "arq", "jobs_per_s")), ">= 4", lambda v: v >= 4),
        Target("Pickup p50, ms (idle worker)", ours("pickup", "pickup_p50_ms"), "<= 10",
               lambda v: v <= 10, 1),
        Target("Idle worker CPU, % of a core", ours("pickup", "idle_cpu_pct"), "< 2",
               lambda v: v < 2),
        Target("1,000 emails at 100 ms, x floor", ours("emails", "x_floor"), "<= 1.25",
               lambda v: v <= 1.25),
        Target("Thumbnails/s, share of raw Pillow", _ratio(ours("images", "images_per_s"),
               other("images", "raw_pillow", "images_per_s")), ">= 0.85", lambda v: v >= 0.85),
        Target("Worker loop lag p99 during thumbnails, ms", ours("images", "lag_p99_ms"), "<= 50",
               lambda v: v <= 50, 1),
        Target("Worker RSS idle, MiB", ours("pickup", "worker_rss_idle"), "<= 100",
               lambda v: v <= 100, 0),
    ]  # fmt: skip


TABLES: list[tuple[str, str, list[tuple[str, str, int]]]] = [
    ("front_door", "1. Front door: `POST /send-email`, wrk, {connections} connections, {duration}s",
     [("rps", "req/s", 0), ("p50_ms", "p50 ms", 1), ("p99_ms", "p99 ms", 1),
      ("non_2xx", "non-2xx", 0), ("web_rss_idle", "web RSS idle MiB", 0),
      ("web_rss_load", "web RSS load MiB", 0)]),
    ("noop", "2. No-op throughput: {noop_jobs} jobs queued through the API, one worker drains them",
     [("jobs_per_s", "drain jobs/s", 0), ("enqueue_per_s", "API enqueue req/s", 0),
      ("worker_cpu_us_per_job", "worker CPU us/job", 0),
      ("worker_cpu_s_per_1000", "worker CPU s per 1,000 jobs, drain only", 3),
      ("worker_rss_load", "worker RSS under load MiB", 0)]),
    ("pickup", "3. Pickup latency: request sent -> job started, {probes} probes on an idle worker",
     [("pickup_p50_ms", "p50 ms", 1), ("pickup_p99_ms", "p99 ms", 1),
      ("idle_cpu_pct", "idle worker CPU %", 2), ("worker_rss_idle", "worker RSS idle MiB", 0),
      ("web_rss_idle", "web RSS idle MiB", 0)]),
    ("io", "3b. I/O drain: {io_jobs} jobs sleeping {io_sleep} s queued, then one worker runs "
     "{io_concurrency} at once",
     [("seconds", "drain s", 2), ("floor_s", "floor s", 2), ("x_floor", "x floor", 2),
      ("worker_cpu_ms_per_job", "worker CPU ms/job", 3),
      ("worker_rss_load_io", "worker RSS MiB", 0)]),
    ("emails", "4. I/O concurrency: emails to an SMTP sink that answers DATA after {email_delay} s",
     [("emails", "emails", 0), ("concurrency", "concurrency", 0), ("seconds", "drain s", 2),
      ("floor_s", "floor s", 2), ("x_floor", "x floor", 2),
      ("worker_cpu_ms_per_email", "worker CPU ms/email", 2),
      ("worker_rss_load_io", "worker RSS MiB", 0)]),
    ("images", "5. Images: {images} photos 3000x2000 -> thumbnails, {image_threads} threads",
     [("images_per_s", "thumbnails/s", 1), ("lag_p99_ms", "loop lag p99 ms", 1),
      ("lag_max_ms", "loop lag max ms", 1), ("failed", "failed", 0)]),
]  # fmt: skip


def _versions() -> dict[str, str]:
    wanted = {"arq", "redis", "aiohttp", "celery", "flask", "gunicorn", "pillow", "uvloop",
              "orjson", "hiredis", "aiosmtplib", "kombu", "taskiq", "taskiq-redis",
              "dramatiq"}  # fmt: skip
    found = {}
    for label, python in (
        ("ours", sys.executable),
        ("celery", str(VENVS / "celery" / "bin" / "python")),
        ("arq", str(VENVS / "arq" / "bin" / "python")),
        ("taskiq", str(VENVS / "taskiq" / "bin" / "python")),
        ("dramatiq", str(VENVS / "dramatiq" / "bin" / "python")),
    ):
        listing = subprocess.run(
            [python, "-m", "pip", "list", "--format", "json"], capture_output=True, text=True
        )
        packages = json.loads(listing.stdout or "[]")
        found[label] = ", ".join(
            f"{p['name']} {p['version']}" for p in packages if p["name"].lower() in wanted
        )
    return found


def _machine() -> list[str]:
    model = next(
        (line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
         if line.startswith("model name")), platform.processor(),
    )  # fmt: skip
    redis = subprocess.run(["redis-server", "--version"], capture_output=True, text=True).stdout
    return [
        f"- CPU: {model}, {os.cpu_count()} cores; {platform.system()} {platform.release()}",
        f"- Python {platform.python_version()}; {redis.split(' sha=')[0].strip()}",
        f"- load average when the report was written: {os.getloadavg()[0]:.2f}",
    ]


def write(results: dict[str, Any], out: Path) -> None:
    sizes, reps = results["sizes"], results["reps"]
    minutes = (results["finished"] - results["started"]) / 60
    lines = [
        "# Benchmark results",
        "",
        f"Run on {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime(results['started']))} "
        f"with `{results.get('command', 'make bench')}` ({reps} repetitions, {minutes:.1f} "
        "min). Medians [min-max] over the "
        "repetitions; ratios are taken within each repetition, then summarised. The machine is "
        "shared with other jobs, so only the ratios mean much.",
        "",
        "## Targets (issue 4)",
        "",
        "| target | measured | goal | verdict |",
        "|---|---|---|---|",
    ]
    for target in targets(results):
        lines.append(
            f"| {target.name} | {span(target.values, target.digits)} | {target.goal} "
            f"| {target.verdict} |"
        )
    lines += peer_report.section(results, LABELS, span)
    for scenario, title, columns in TABLES:
        if scenario not in results:
            continue
        lines += ["", f"## {title.format(**sizes)}", ""]
        lines.append("| system | " + " | ".join(label for _, label, _ in columns) + " |")
        lines.append("|---" * (len(columns) + 1) + "|")
        for system, figures in results[scenario].items():
            cells = [span(figures.get(metric, []), digits) for metric, _, digits in columns]
            lines.append(f"| {LABELS.get(system, system)} | " + " | ".join(cells) + " |")
    lines += scale_section(results, sizes)
    lines += ["", "## How it was measured", "", *HOW, "", "## Machine and versions", ""]
    lines += _machine()
    lines += [f"- {LABELS[k]}: {v}" for k, v in _versions().items()]
    lines += ["", f"Sizes: `{json.dumps(sizes)}`", ""]
    (out / "RESULTS.md").write_text("\n".join(lines))
    plot(results, out / "results.png")


def scale_section(results: dict[str, Any], sizes: dict[str, Any]) -> list[str]:
    """The scale scenario: one table per worker count, one for the deep queue."""
    figures = results.get("scale", {}).get("ours")
    if not figures:
        return []

    def cell(metric: str, digits: int = 1) -> str:
        return span(figures.get(metric, []), digits)

    lines = [
        "",
        f"## 6. Scale: {sizes['scale_jobs']:,} no-op jobs drained by 1, 2 and 4 workers; "
        f"a backlog of {sizes['backlog']:,} queued jobs",
        "",
        "| workers | jobs/s (all together) | Redis CPU ms per 1,000 jobs | worker CPU us/job |",
        "|---|---|---|---|",
    ]
    for count in (1, 2, 4):
        lines.append(
            f"| {count} | {cell(f'jobs_per_s_{count}w', 0)} "
            f"| {cell(f'redis_cpu_ms_per_1000_{count}w')} "
            f"| {cell(f'worker_cpu_us_per_job_{count}w', 0)} |"
        )
    lines += [
        "",
        "| queue | enqueue round trip us | enqueue Redis CPU us | 50-job claim round trip us "
        "| claim Redis CPU us |",
        "|---|---|---|---|---|",
    ]
    for depth, label in (("shallow", "20,000 jobs"), ("deep", f"{sizes['backlog']:,} jobs")):
        lines.append(
            f"| {label} | {cell(f'enqueue_us_{depth}', 0)} "
            f"| {cell(f'enqueue_redis_cpu_us_{depth}', 0)} | {cell(f'claim_us_{depth}', 0)} "
            f"| {cell(f'claim_redis_cpu_us_{depth}', 0)} |"
        )
    lines += [
        "",
        f"At {sizes['backlog']:,} queued jobs: Redis memory {cell('bytes_per_queued_job', 0)} "
        f"bytes per queued job; `/health` p50 {cell('health_ms_p50')} ms "
        f"(p99 {cell('health_ms_p99')}); the dashboard overview p50 {cell('overview_ms_p50')} ms "
        f"(p99 {cell('overview_ms_p99')}); the queue filled at {cell('fill_jobs_per_s', 0)} "
        "jobs/s.",
    ]
    return lines


HOW = [
    "- Every system runs as users run it, with fresh processes per scenario, against one private "
    "`redis-server` (loopback, no persistence), flushed between runs. This service: `python -m "
    "web` + `arq service.WorkerSettings` with default settings, except rate limits switched off "
    '(`RATE_LIMIT_PER_TOKEN=""`, `RATE_LIMIT_PER_RECIPIENT=""`: the bench sends far more than '
    "the default limits allow) and an API token sent with every request. Flask + Celery: "
    "gunicorn with 2 sync workers, `celery worker --loglevel=INFO` (prefork, concurrency = "
    "cores), Redis broker and result backend. Plain arq: a minimal aiohttp app and "
    "`arq arq_app.WorkerSettings` with arq's defaults (max_jobs 10, poll 0.5 s, pickle).",
    "- Peers (issue 17), each one worker process from its own virtualenv, jobs queued by a "
    "minimal web app (`POST /events`) or the app's own `enqueue-sleep` command "
    "(`bench/baselines/taskiq_app.py`, `dramatiq_app.py`): taskiq with its list broker and "
    "with its stream broker, `taskiq worker --workers 1 --max-async-tasks` = this service's "
    "`WORKER_MAX_JOBS`, an aiohttp app; Dramatiq with its Redis broker, `dramatiq --processes "
    "1 --threads 8` (100 in the I/O drain), Flask under gunicorn (2 workers). Their jobs log "
    "nothing of their own and return their start time, kept by the peer's own Redis result "
    "backend: pickup is read from it, finished jobs are counted as result keys. In the no-op "
    "drain they run without a result backend (their lightest set-up; this service keeps its "
    "status records), and finished jobs are counted from the broker's keys: taskiq's stream "
    "group (read less pending), Dramatiq's message hash, taskiq's list (popped counts as "
    "finished: up to `--max-async-tasks` jobs early). They run the no-op, pickup and I/O-drain "
    "scenarios only.",
    "- I/O drain: the jobs (this service: `bench_sleep`, a bench-only job that the bench's "
    "worker `arq bench.worker.WorkerSettings` adds to the service's registry; taskiq: "
    "`asyncio.sleep`; Dramatiq: `time.sleep`) are queued with each system's own client, then "
    "one worker starts with the concurrency given (this service: `WORKER_MAX_JOBS`); seconds "
    "from the first finished job to the last, plus one job's sleep (start-up left out).",
    "- Front door: `wrk -t2 -c50 --latency` POSTing a JSON email, each to a new recipient "
    "(`user<n>@example.com`: no system may win by caching one address's check); no worker runs "
    "meanwhile.",
    "- No-op: the `/events` job (logs one line). Jobs are queued through the API with 50 requests "
    "in flight, then one worker process starts; jobs/s counts from its first finished job to "
    "the last (start-up left out). Worker CPU us/job: the worker's CPU from /proc over the "
    "whole run, start-up included; CPU s per 1,000 jobs: over the drain's window only.",
    "- Pickup: the time from sending the request to the job's recorded start (this service: "
    "the tracking hash's `started_at`; arq: the result's start time; Celery: the result's "
    "`date_done`, which for a no-op job is within a millisecond of its start), with 0.1-0.3 s "
    "between probes. Idle CPU: the worker process tree's CPU time over an idle window.",
    "- Emails: the worker is up and idle, then the emails are queued through the API; the time "
    "runs from the first request to the sink's last accepted message. Floor = emails x delay / "
    "concurrency (this service: `WORKER_MAX_JOBS`; arq: max_jobs 10; Celery: prefork children). "
    "The baselines send fewer emails (they drain ~20/s): their `x floor` is what compares. "
    "Each email goes to a new recipient. The sink (`bench/sink.py`, aiosmtpd in its own "
    "process on the same two cores, ~1 ms of CPU per email) advertises PIPELINING, as "
    "Postfix, Exim and Sendmail do; this service then sends MAIL, RCPT and DATA in one write, "
    "the baselines (smtplib, aiosmtplib) do not pipeline.",
    "- Images: photos uploaded through the API with no worker running, then a worker (the "
    "service's settings plus a 10 ms loop-lag probe, `bench/lagprobe.py`) makes thumbnails; "
    "thumbnails/s from the first job's start to the last one's end. Raw Pillow: the same "
    "`make_thumbnail` over the same files in a thread pool of the same size, nothing else.",
    "- RSS: the whole process tree (gunicorn and Celery have children).",
    "- Scale (this service only, `bench/scale.py`): jobs are queued straight into Redis with "
    "the service's enqueue script (pipelined), then 1, 2 and 4 worker processes start together; "
    "jobs/s from the first job gone to the last, CPU from /proc. The backlog is filled the same "
    "way; enqueue and 50-job claim costs are medians of 200 calls made one at a time (each "
    "claimed batch is then removed, as finished jobs are), page latencies of 50 loads.",
]


def plot(results: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, (left, right, peers) = plt.subplots(1, 3, figsize=(16, 4.8))
    ratios = [t for t in targets(results) if t.goal.startswith(">=") and t.values]
    names = [t.name.replace(", ", "\n") for t in ratios]
    medians = [t.median for t in ratios]
    errors = [
        [t.median - min(t.values) for t in ratios],
        [max(t.values) - t.median for t in ratios],
    ]
    bars = left.bar(range(len(ratios)), medians, yerr=errors, capsize=4, color="#3b7dd8")
    for index, target in enumerate(ratios):
        goal = float(target.goal.split()[-1])
        left.hlines(goal, index - 0.4, index + 0.4, colors="#d0342c", linestyles="--")
        left.annotate(f"{target.median:.2f}", (index, target.median), ha="center", va="bottom")
    left.set_xticks(range(len(ratios)), names, fontsize=7)
    left.set_title("ratios (bars) against their targets (dashed)")
    del bars
    everyone = ("ours", "celery", "arq", *peer_report.PEERS)
    systems = [s for s in everyone if _get(results, "pickup", s, "pickup_p50_ms")]
    p50 = [statistics.median(_get(results, "pickup", s, "pickup_p50_ms")) for s in systems]
    right.bar(
        [LABELS[s].replace(", ", "\n") for s in systems],
        p50,
        color=["#3b7dd8" if s == "ours" else "#aaaaaa" for s in systems],
    )
    right.tick_params(axis="x", labelsize=7, labelrotation=30)
    right.axhline(10, color="#d0342c", linestyle="--")
    right.set_yscale("log")
    right.set_ylabel("ms (log scale)")
    right.set_title("pickup latency p50 (target <= 10 ms, dashed)")
    for index, value in enumerate(p50):
        right.annotate(f"{value:.1f}", (index, value), ha="center", va="bottom")
    peer_report.draw(peers, results)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
