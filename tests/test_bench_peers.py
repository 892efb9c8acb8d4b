"""The bench's comparison with its peers (issue 17): what it runs and how it reports.

The bench itself is not part of `make test` (minutes of load); these check the parts a change
to the service could break: the bench-only job runs on the bench's worker and nowhere else,
each scenario runs the systems it should, and the best peer is picked per repetition.
"""

from __future__ import annotations

from typing import Any

from arq.connections import ArqRedis

from bench import peer_report
from bench.peers import Dramatiq, Taskiq
from bench.run import _targets
from bench.systems import FlaskCelery, Ours, PlainArq, Ports, System
from bench.worker import BENCH_REGISTRY
from jobs.registry import REGISTRY
from service.engine.loop import BatchWorker as Worker
from service.queue.enqueue import enqueue
from service.worker.options import worker_options
from settings import Settings


def test_bench_sleep_is_registered_by_the_bench_worker_only() -> None:
    assert "bench_sleep" in BENCH_REGISTRY
    assert "bench_sleep" not in REGISTRY  # production workers, the API and the dashboard
    assert {job.name for job in REGISTRY} < {job.name for job in BENCH_REGISTRY}


async def test_bench_sleep_runs_on_the_bench_worker(settings: Settings, redis: ArqRedis) -> None:
    task_id = await enqueue(redis, "bench_sleep", {"seconds": 0.01})
    options = worker_options(settings, BENCH_REGISTRY)
    options["redis_pool"].wait_for_work = False  # a burst run ends once the queue is empty
    options.update(burst=True, poll_delay=0.01, handle_signals=False)
    worker = Worker(**options)
    try:
        await worker.main()
    finally:
        await worker.close()
    assert (worker.jobs_complete, worker.jobs_failed) == (1, 0)
    meta = await redis.hgetall(f"jobsvc:meta:{task_id}")  # type: ignore[misc]
    assert meta[b"outcome"] == b"success"


def _systems() -> list[System]:
    ports = Ports(redis=1, web=2, smtp=3)
    return [
        Ours(ports),
        FlaskCelery(ports),
        PlainArq(ports),
        Taskiq(ports, "list", 50),
        Taskiq(ports, "stream", 50),
        Dramatiq(ports),
    ]


def _names(scenario: str) -> set[str]:
    return {s.name if s else "raw_pillow" for s in _targets(scenario, _systems(), 0)}


def test_each_scenario_runs_the_systems_it_compares() -> None:
    peers = {"taskiq_list", "taskiq_stream", "dramatiq"}
    assert _names("noop") == _names("pickup") == {"ours", "celery", "arq", *peers}
    assert _names("io") == {"ours", *peers}
    assert _names("front_door") == _names("emails") == {"ours", "celery", "arq"}
    assert _names("images") == {"ours", "raw_pillow"}
    assert _names("scale") == {"ours"}


def test_peer_workers_run_as_the_issue_says() -> None:
    ports = Ports(redis=1, web=2, smtp=3)
    taskiq = Taskiq(ports, "stream", 50).worker_argv()
    assert taskiq[-4:] == ["--workers", "1", "--max-async-tasks", "50"]
    assert Taskiq(ports, "list", 50).io_worker(100)[0][-1] == "100"
    assert Dramatiq(ports).worker_argv()[-4:] == ["--processes", "1", "--threads", "8"]
    assert Dramatiq(ports).io_worker(100)[0][-1] == "100"
    for peer in (Taskiq(ports, "list", 50), Taskiq(ports, "stream", 50), Dramatiq(ports)):
        argv, env = peer.noop_worker()
        assert (argv, env) == (peer.worker_argv(), {"BENCH_PEER_RESULTS": "off"})
    assert Ours(ports).noop_worker() == (Ours(ports).worker_argv(), {})
    argv, env = Ours(ports).io_worker(100)
    assert "bench.worker.WorkerSettings" in argv
    assert env == {"WORKER_MAX_JOBS": "100"}


RESULTS: dict[str, Any] = {
    "noop": {
        "ours": {"jobs_per_s": [4000.0, 3000.0]},
        "taskiq_list": {"jobs_per_s": [2000.0, 2500.0]},
        "taskiq_stream": {"jobs_per_s": [1000.0, 3000.0]},
        "dramatiq": {"jobs_per_s": [1500.0, float("nan")]},
    },
    "pickup": {
        "ours": {"pickup_p50_ms": [2.0, 2.0]},
        "taskiq_stream": {"pickup_p50_ms": [1.0, 4.0]},
        "dramatiq": {"pickup_p50_ms": [20.0, 2.0]},
    },
}


def _measure(metric: str) -> peer_report.Measure:
    return next(m for m in peer_report.MEASURES if m.metric == metric)


def test_the_best_peer_is_taken_per_repetition() -> None:
    jobs = peer_report.compare(RESULTS, _measure("jobs_per_s"))  # higher is better
    assert jobs.best == [2000.0, 3000.0]
    assert jobs.best_by == ["taskiq_list", "taskiq_stream"]
    assert jobs.ratios == [2.0, 1.0]
    pickup = peer_report.compare(RESULTS, _measure("pickup_p50_ms"))  # lower is better
    assert pickup.best == [1.0, 2.0]
    assert pickup.ratios == [2.0, 1.0]


def test_the_section_lists_only_measures_a_peer_ran() -> None:
    lines = peer_report.section(RESULTS, {}, lambda values, digits: str(values))
    rows = [line for line in lines if line.startswith("| ") and "measure" not in line]
    assert [row.split(" | ")[0] for row in rows] == ["| No-op jobs/s", "| Pickup p50, ms"]
    assert peer_report.section({"noop": {"ours": {"jobs_per_s": [1.0]}}}, {}, lambda v, d: "") == []
