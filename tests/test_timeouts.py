"""Per-function timeouts, the lock bound that follows them, and the worker's fault settings."""

from __future__ import annotations

import copy
from typing import Any

import pytest
from arq import func
from arq.connections import ArqRedis
from arq.constants import in_progress_key_prefix

from jobs.registry import REGISTRY
from service.engine.loop import BatchWorker as Worker
from service.store.outage import outage_of
from service.store.redis import worker_redis_settings
from service.worker.lease import lease_seconds
from service.worker.options import worker_options
from settings import Settings, SettingsError, load_settings
from tests.conftest import RunWorker


async def test_each_function_and_cron_job_gets_its_own_timeout(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("EMAIL_JOB_TIMEOUT", "20")
    monkeypatch.setenv("WEBHOOK_JOB_TIMEOUT", "15")
    monkeypatch.setenv("IMAGE_JOB_TIMEOUT", "90")
    monkeypatch.setenv("JOB_TIMEOUT", "600")
    monkeypatch.setenv("JOB_LOCK_MARGIN", "3")
    monkeypatch.setenv("WORKER_SHUTDOWN_GRACE", "7")
    settings = load_settings()
    options = worker_options(settings)
    worker = Worker(**options, handle_signals=False)

    timeouts = {name: function.timeout_s for name, function in worker.functions.items()}
    assert timeouts == {
        "send_email": 20,
        "send_welcome_email": 20,
        "log_event": 20,
        "deliver_webhook": 15,
        "process_image": 90,
        "daily_report": 600,
        "cleanup_old_files": 600,
        "cron:daily_report": 600,
        "cron:cleanup_old_files": 600,
    }
    assert set(timeouts) == {job.name for job in REGISTRY} | {
        str(job.cron_name) for job in REGISTRY.scheduled()
    }
    # arq's own lock would hold every job for the longest timeout; the bound is per function
    assert worker.in_progress_timeout_s == 610
    assert lease_seconds(REGISTRY["send_email"], settings) == 23
    assert lease_seconds(REGISTRY["deliver_webhook"], settings) == 18
    assert options["job_completion_wait"] == 7


@pytest.mark.parametrize(
    ("variables", "message"),
    [
        ({"SMTP_TIMEOUT": "30", "EMAIL_JOB_TIMEOUT": "30"}, "EMAIL_JOB_TIMEOUT"),
        ({"WEBHOOK_TIMEOUT": "40"}, "WEBHOOK_JOB_TIMEOUT"),
        ({"WORKER_SHUTDOWN_GRACE": "-1"}, "WORKER_SHUTDOWN_GRACE"),
        ({"JOB_LOCK_MARGIN": "0"}, "JOB_LOCK_MARGIN"),
    ],
)
def test_a_job_timeout_shorter_than_its_own_requests_is_refused(
    monkeypatch: pytest.MonkeyPatch, variables: dict[str, str], message: str
) -> None:
    for name, value in variables.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(SettingsError, match=message):
        load_settings()


def test_worker_retries_redis_for_the_configured_time_counted_from_the_outage(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("REDIS_RETRY_SECONDS", "30")
    redis = worker_redis_settings(load_settings())
    assert redis.retry_on_timeout is True
    outage = outage_of(redis.retry)
    assert outage is not None
    assert outage.give_up_after == 30
    # every connection's copy of the policy shares the one outage clock
    assert outage_of(copy.deepcopy(redis.retry)) is outage


async def test_a_claimed_job_starts_with_a_lock_of_the_margin_not_the_longest_timeout(
    settings: Settings, redis: ArqRedis, run_worker: RunWorker
) -> None:
    locks: list[int] = []

    async def report_lock(ctx: dict[str, Any]) -> None:  # untracked: sees the claim's lock
        locks.append(await ctx["redis"].pttl(in_progress_key_prefix + ctx["job_id"]))

    functions = [*worker_options(settings)["functions"], func(report_lock, name="report_lock")]
    await redis.enqueue_job("report_lock")
    await run_worker(functions=functions)
    # arq's own lock would last the longest function timeout + 10 s (310 s here)
    assert len(locks) == 1
    assert 0 < locks[0] <= settings.job_lock_margin * 1000
