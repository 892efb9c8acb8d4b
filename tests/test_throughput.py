"""The throughput graphs' counters and the per-function figures: gathered by a real worker as
its attempts end and written once a second (records.tallies), read back by GET /stats/*,
bounded in Redis."""

from __future__ import annotations

import math
import random
from typing import Any

import pytest
from aiohttp.test_utils import TestClient
from arq.connections import ArqRedis
from redis.exceptions import ConnectionError as RedisConnectionError

from service.queue.enqueue import enqueue
from service.records import function_stats, latency, throughput
from service.records.tallies import Tallies
from service.records.throughput import SPANS
from service.store import keys
from settings import Settings
from tests.conftest import RunWorker, SmtpRecorder, free_port, status_of
from tests.waiting import wait_until
from tests.webhook_targets import HeldTarget, ServerFactory, hook_url, queue_webhook

KINDS: tuple[throughput.Finished, ...] = ("c", "f")
EMAIL = {"to": "ann@example.com", "subject": "Hi", "body": "Hi Ann"}


async def _json(client: TestClient[Any, Any], path: str) -> dict[str, Any]:
    response = await client.get(path)
    assert response.status == 200, await response.text()
    body: dict[str, Any] = await response.json()
    return body


async def _written(client: TestClient[Any, Any], completed: int, failed: int) -> None:
    """Wait for the worker's once-a-second write of the graphs' counts (records.tallies)."""

    async def counted() -> bool:
        body = await _json(client, "/stats/throughput?range=30d")
        return (sum(body["completed"]), sum(body["failed"])) == (completed, failed)

    await wait_until(counted, within=15)


async def _count(redis: ArqRedis, finished_ms: int, kind: throughput.Finished) -> None:
    tallies = Tallies()
    tallies.ended(finished_ms, kind, "log_event", "success", None, None)
    assert await tallies.flush(redis)


async def test_a_worker_counts_finished_jobs_per_second_minute_and_hour(
    client: TestClient[Any, Any],
    redis: ArqRedis,
    run_worker: RunWorker,
    smtp_server: SmtpRecorder,
) -> None:
    for n in range(5):
        await enqueue(redis, "log_event", {"event": f"event {n}"})
    await enqueue(redis, "process_image", {"upload": "missing.jpg"})  # fails for good
    smtp_server.replies = ["451 4.3.0 try again later"]  # one retry, then sent
    await enqueue(redis, "send_email", EMAIL)
    await run_worker()
    await _written(client, 6, 1)

    for span, (step, points) in SPANS.items():
        body = await _json(client, f"/stats/throughput?range={span}")
        assert (body["range"], body["step"]) == (span, step)
        assert len(body["completed"]) == len(body["failed"]) == points
        assert sum(body["completed"]) == 6, span  # a retry is not an end
        assert sum(body["failed"]) == 1, span
        # the jobs just finished are counted in the latest steps, not anywhere in the span
        latest = max(i for i, count in enumerate(body["completed"]) if count)
        assert points - latest <= 1 + math.ceil(30 / step), (span, latest)
    assert (await _json(client, "/stats/throughput"))["range"] == "5m"
    # every counter the worker wrote expires (its once-a-second write sets each hash's TTL)
    written = [key async for key in redis.scan_iter(match=f"{keys.PREFIX}tp:*")]
    written += [key async for key in redis.scan_iter(match=f"{keys.PREFIX}fn:*")]
    assert len(written) >= 3 + 3, written
    for key in written:
        assert 0 < await redis.ttl(key) <= throughput.HOURS_TTL, key


async def test_each_function_has_its_jobs_failure_rate_and_latencies_for_the_last_hour(
    client: TestClient[Any, Any],
    redis: ArqRedis,
    run_worker: RunWorker,
    smtp_server: SmtpRecorder,
) -> None:
    for n in range(4):
        await enqueue(redis, "log_event", {"event": f"event {n}"})
    await enqueue(redis, "process_image", {"upload": "missing.jpg"})
    smtp_server.replies = ["451 4.3.0 try again later"]
    await enqueue(redis, "send_email", EMAIL)
    await run_worker()
    await _written(client, 5, 1)

    body = await _json(client, "/stats/functions")
    assert body["window"] == 3600
    assert body["relative_error"] == round(latency.RELATIVE_ERROR, 4)
    found = {entry["function"]: entry for entry in body["functions"]}
    assert sorted(found) == ["log_event", "process_image", "send_email"]
    events, images, emails = found["log_event"], found["process_image"], found["send_email"]
    assert (events["jobs"], events["succeeded"], events["failed"]) == (4, 4, 0)
    assert events["failure_rate"] == 0.0
    assert (images["jobs"], images["failed"], images["failure_rate"]) == (1, 1, 1.0)
    assert (emails["jobs"], emails["succeeded"], emails["retried"]) == (1, 1, 1)
    for entry in found.values():
        assert 0 < entry["duration_p50"] <= entry["duration_p95"] < 5, entry
        assert entry["wait_p95"] is not None, entry
        assert 0 <= entry["wait_p95"] < 30, entry


async def test_a_job_past_its_time_limit_counts_as_failed(
    client: TestClient[Any, Any],
    settings: Settings,
    run_worker: RunWorker,
    aiohttp_server: ServerFactory,
) -> None:
    """arq fails such a job itself, past the attempt's script: counted all the same."""
    target = HeldTarget()
    url = await hook_url(aiohttp_server, target.handle)
    impatient = settings.model_copy(
        update={"job_timeout": 0.3, "webhook_job_timeout": 0.3, "webhook_timeout": 30}
    )
    task_id = await queue_webhook(client, url, {})
    try:
        await run_worker(impatient)
    finally:
        target.release.set()

    assert (await status_of(client, task_id))["status"] == "FAILURE"
    await _written(client, 0, 1)
    for span in SPANS:
        body = await _json(client, f"/stats/throughput?range={span}")
        assert (sum(body["completed"]), sum(body["failed"])) == (0, 1), span
    (webhooks,) = (await _json(client, "/stats/functions"))["functions"]
    assert (webhooks["function"], webhooks["jobs"], webhooks["failure_rate"]) == (
        "deliver_webhook",
        1,
        1.0,
    )


@pytest.mark.parametrize(
    "query", ["range=1h", "range=", "range=5M", "range=²", "range=5m&range=30d"]
)
async def test_a_bad_range_is_400_and_names_the_ranges(
    client: TestClient[Any, Any], query: str
) -> None:
    response = await client.get(f"/stats/throughput?{query}")
    assert response.status == 400
    error = (await response.json())["error"]
    assert error in ("range must be one of 5m, 24h, 30d", "give range once"), error


async def test_series_put_each_count_in_its_step_and_drop_what_is_out_of_range(
    redis: ArqRedis,
) -> None:
    now = 1_780_000_000.5  # a fixed clock: the series are read "as of" it
    now_ms = int(now * 1000)
    await _count(redis, now_ms, "c")
    await _count(redis, now_ms - 10_000, "f")  # 10 s ago
    await _count(redis, now_ms - 3 * 3600_000, "c")  # 3 hours ago
    await _count(redis, now_ms - 10 * 86_400_000, "c")  # 10 days ago

    live = await throughput.series(redis, "5m", now)
    assert live.start == int(now) - 299
    assert live.step == 1
    assert live.completed[-1] == 1
    assert sum(live.completed) == 1
    assert live.failed[-11] == 1
    assert sum(live.failed) == 1

    day = await throughput.series(redis, "24h", now)
    assert day.start == (int(now) // 60 - 1439) * 60
    assert day.completed[-1] == 1
    assert day.completed[-1 - 180] == 1
    assert sum(day.completed) == 2
    assert sum(day.failed) == 1

    month = await throughput.series(redis, "30d", now)
    assert month.start == (int(now) // 3600 - 719) * 3600
    assert month.completed[-1] == 1
    assert month.completed[-4] == 1
    assert month.completed[-1 - 240] == 1
    assert sum(month.completed) == 3


async def test_counts_redis_refused_are_written_with_the_next_flush(redis: ArqRedis) -> None:
    tallies = Tallies()
    tallies.ended(1_780_000_000_000, "c", "log_event", "success", 0.01, 0.02)
    unreachable = ArqRedis(port=free_port(), socket_connect_timeout=0.5)
    try:
        with pytest.raises(RedisConnectionError):
            await tallies.flush(unreachable)
    finally:
        await unreachable.aclose()
    assert len(tallies) == 3 + 3  # refused: three throughput fields, three of the function's
    tallies.ended(1_780_000_000_000, "c", "log_event", "success", 0.01, 0.02)
    assert await tallies.flush(redis)
    assert not await tallies.flush(redis)  # nothing left
    live = await throughput.series(redis, "5m", 1_780_000_000)
    assert live.completed[-1] == 2
    (stats,) = await function_stats.last_hour(redis, ["log_event"], 1_780_000_000)
    assert (stats.succeeded, sum(stats.durations.values()), sum(stats.waits.values())) == (2, 2, 2)


async def test_counters_expire_once_no_graph_shows_them(redis: ArqRedis) -> None:
    await _count(redis, 1_780_000_000_000, "c")
    where = throughput.tally(1_780_000_000_000, "c")
    ttls = [await redis.ttl(key) for key in where.keys]
    assert 300 < ttls[0] <= throughput.SECONDS_TTL
    assert 24 * 3600 < ttls[1] <= throughput.MINUTES_TTL
    assert 30 * 86_400 < ttls[2] <= throughput.HOURS_TTL


def test_percentiles_from_buckets_are_within_the_stated_error() -> None:
    rng = random.Random(15)
    for _ in range(20):
        values = [rng.lognormvariate(rng.uniform(-9, 2), rng.uniform(0.1, 2)) for _ in range(500)]
        counts: dict[int, int] = {}
        for value in values:
            counts[latency.bucket(value)] = counts.get(latency.bucket(value), 0) + 1
        ordered = sorted(values)
        for fraction in (0.5, 0.95):
            exact = ordered[math.ceil(fraction * len(ordered)) - 1]
            estimate = latency.percentile(counts, fraction)
            assert estimate is not None
            assert abs(estimate / exact - 1) <= latency.RELATIVE_ERROR + 1e-9, (exact, estimate)
    assert latency.percentile({}, 0.5) is None
    assert latency.bucket(0) == 0
    assert latency.middle(0) == 0.0


async def test_a_day_of_counters_takes_a_few_kilobytes(redis: ArqRedis) -> None:
    """Every minute and hour of one day counted, with large counts: the history a day leaves
    (24 hashes of minutes, one of hours) and the live graph's hashes, measured by Redis."""
    day_start = 1_780_012_800_000  # 00:00 UTC
    async with redis.pipeline(transaction=False) as pipe:
        for minute in range(1440):
            at = day_start + minute * 60_000
            for kind in KINDS:
                where = throughput.tally(at + 59_999, kind)
                for key, field in zip(where.keys[1:], where.fields[1:], strict=True):
                    pipe.hincrby(key, field, 123_456)
        for second in range(360):  # the live graph's 6 minutes, every second busy
            for kind in KINDS:
                where = throughput.tally(day_start + second * 1000, kind)
                pipe.hincrby(where.keys[0], where.fields[0], 4_321)
        await pipe.execute()
    first_hour = day_start // 3_600_000
    history = [keys.throughput_minutes(first_hour + hour) for hour in range(24)]
    history.append(keys.throughput_hours(first_hour // 24))
    live = [keys.throughput_seconds(day_start // 60_000 + minute) for minute in range(6)]
    for key in history + live:
        assert await redis.object("ENCODING", key) == b"listpack", key
    per_day = sum([await redis.memory_usage(key, samples=0) for key in history])
    live_bytes = sum([await redis.memory_usage(key, samples=0) for key in live])
    print(f"\nthroughput counters: {per_day} bytes per day of history, {live_bytes} live")
    assert per_day < 40_000
    assert live_bytes < 10_000


async def test_a_function_minute_takes_a_few_hundred_bytes(redis: ArqRedis) -> None:
    """One busy function's minute: every outcome, and its latencies spread over 5 to 500 ms
    (13 buckets each) and a queue wait from 1 ms to 1 s (40 buckets)."""
    tallies = Tallies()
    outcomes: tuple[function_stats.Outcome, ...] = ("success", "failure", "retry")
    for n in range(10_000):
        run, wait = 0.005 * 100 ** (n % 97 / 96), 0.001 * 1000 ** (n % 89 / 88)
        tallies.ended(1_780_000_000_000, None, "send_email", outcomes[n % 3], run, wait)
    assert await tallies.flush(redis)
    key = keys.function_minute("send_email", 1_780_000_000_000 // 60_000)
    assert await redis.object("ENCODING", key) == b"listpack"
    used = await redis.memory_usage(key, samples=0)
    fields = await redis.hlen(key)  # type: ignore[misc]
    print(f"\none function's minute: {used} bytes, {fields} fields")
    assert used < 2_000
    (stats,) = await function_stats.last_hour(redis, ["send_email"], 1_780_000_000)
    assert (stats.succeeded, stats.failed, stats.retried) == (3334, 3333, 3333)
    assert stats.duration_p50 is not None
    assert abs(stats.duration_p50 / 0.05 - 1) < 0.15  # the median run: 5 ms x 100^(1/2)
