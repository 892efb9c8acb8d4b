"""Job search (GET /jobs) and bulk actions (POST /jobs/bulk) against a real Redis and worker."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote

import pytest
from aiohttp.test_utils import TestClient
from arq.connections import ArqRedis

from jobs.registry import REGISTRY
from service.queue.enqueue import enqueue
from service.records.search import search
from service.records.search_index import SearchIndex, member
from service.store import keys
from settings import Settings
from tests.conftest import (
    AUTH_HEADERS,
    RunWorker,
    SmtpRecorder,
    accepted_task,
    queued,
    status_of,
)
from tests.webhook_targets import queue_webhook
from web import create_app
from web.job_search import search_query

REFUSED = "550 5.1.1 mailbox unavailable"


def email(to: str, subject: str = "Hello") -> dict[str, Any]:
    return {"to": to, "subject": subject, "body": "Hi"}


async def found(client: TestClient[Any, Any], query: str) -> dict[str, Any]:
    response = await client.get(f"/jobs?{query}")
    assert response.status == 200, await response.text()
    body: dict[str, Any] = await response.json()
    return body


async def ids(client: TestClient[Any, Any], query: str) -> list[str]:
    return [job["task_id"] for job in (await found(client, query))["jobs"]]


async def newest_first(redis: ArqRedis, job_ids: list[str]) -> list[str]:
    """The ids in search order: by enqueue time, newest first, and within one millisecond
    by index member, highest first (how the sorted set orders equal scores)."""
    entries = await redis.zrange(keys.search_index(), 0, -1, withscores=True)
    order = {raw.decode().split()[0]: (score, raw) for raw, score in entries}
    return sorted(job_ids, key=lambda job_id: order[job_id], reverse=True)


def iso(ms: int) -> str:
    return quote(datetime.fromtimestamp(ms / 1000, tz=UTC).isoformat())


async def test_a_job_is_found_by_recipient_function_and_state_newest_first(
    client: TestClient[Any, Any],
    run_worker: RunWorker,
    smtp_server: SmtpRecorder,
    redis: ArqRedis,
) -> None:
    first = await accepted_task(client, "/send-email", email("ann@example.com", "one"))
    other = await accepted_task(client, "/send-email", email("bob@example.com"))
    second = await accepted_task(client, "/send-email", email("Ann@Example.com", "two"))
    event = await accepted_task(client, "/events", {"event": "signed up"})

    assert await ids(client, "key=ANN@example.com") == await newest_first(redis, [first, second])
    emails = await newest_first(redis, [first, other, second])
    assert await ids(client, "function=send_email") == emails
    assert await ids(client, "") == await newest_first(redis, [first, other, second, event])
    listing = await found(client, "key=ann@example.com")
    assert {job["state"] for job in listing["jobs"]} == {"waiting"}
    assert listing["jobs"][0]["function"] == "send_email"
    assert listing["next"] is None

    smtp_server.replies = ["250 OK", REFUSED]  # the first one sent succeeds, then a refusal
    await run_worker(max_jobs=1)

    states = {job["task_id"]: job["state"] for job in (await found(client, ""))["jobs"]}
    assert sorted(states.values()) == ["failed", "succeeded", "succeeded", "succeeded"]
    failed = [job_id for job_id, state in states.items() if state == "failed"]
    assert await ids(client, "state=failed") == failed
    assert await ids(client, "state=failed,succeeded") == await ids(client, "")
    assert await ids(client, "state=waiting") == []
    assert await ids(client, "function=log_event&state=succeeded") == [event]


async def test_deferred_running_retrying_and_cancelled_states(
    client: TestClient[Any, Any], redis: ArqRedis, settings: Settings
) -> None:
    later = await accepted_task(client, "/send-email", {**email("a@example.com"), "delay": 3600})
    now = await accepted_task(client, "/send-email", email("b@example.com"))
    gone = await accepted_task(client, "/send-email", email("c@example.com"))
    assert (await client.delete(f"/jobs/{gone}")).status == 200
    retrying = await accepted_task(client, "/send-email", email("d@example.com"))
    await redis.hset(keys.job_meta(retrying), mapping={"attempts": 1})  # type: ignore[misc]

    states = {job["task_id"]: job["state"] for job in (await found(client, ""))["jobs"]}
    assert states == {
        later: "deferred",
        now: "waiting",
        gone: "cancelled",
        retrying: "retrying",
    }
    await redis.psetex(f"arq:in-progress:{now}", 10_000, b"1")  # as a worker marks it
    assert await ids(client, "state=running") == [now]
    states[now] = "running"
    for job_id, state in states.items():  # the status API says the same, in its words
        shown = (await status_of(client, job_id))["status"]
        assert STATUS_OF[state] == shown, (job_id, state, shown)


STATUS_OF = {
    "waiting": "PENDING",
    "deferred": "PENDING",
    "running": "STARTED",
    "retrying": "RETRY",
    "succeeded": "SUCCESS",
    "failed": "FAILURE",
    "cancelled": "CANCELLED",
}


async def test_an_entry_whose_job_redis_has_forgotten_is_not_listed(
    client: TestClient[Any, Any], redis: ArqRedis
) -> None:
    kept = await accepted_task(client, "/events", {"event": "kept"})
    now_ms = int(time.time() * 1000)
    await redis.zadd(keys.search_index(), {member("f" * 32, "log_event"): now_ms})
    assert await ids(client, "") == [kept]


async def test_a_user_id_and_a_webhook_host_are_business_keys(
    client: TestClient[Any, Any],
) -> None:
    response = await client.post("/register", json={"name": "Ann Lee", "email": "Ann@example.com"})
    assert response.status == 201
    registered = await response.json()
    welcome = registered["task_id"]
    assert await ids(client, f"key=user:{registered['id']}") == [welcome]
    assert await ids(client, "key=ann@example.com") == [welcome]

    hook = await queue_webhook(client, "http://127.0.0.1:9/hooks/orders", {"order": 1})
    assert await ids(client, "key=127.0.0.1") == [hook]
    assert await ids(client, "key=user:999") == []


async def test_pages_by_cursor_id_prefix_and_time_range(
    client: TestClient[Any, Any], redis: ArqRedis
) -> None:
    made = [await accepted_task(client, "/events", {"event": f"e{n}"}) for n in range(7)]

    seen: list[str] = []
    link: str | None = "/jobs?limit=3"
    while link is not None:
        response = await client.get(link)
        assert response.status == 200
        page = await response.json()
        assert len(page["jobs"]) <= 3
        seen += [job["task_id"] for job in page["jobs"]]
        link = page["next"]
    assert seen == await newest_first(redis, made)

    target = made[3]
    assert await ids(client, f"prefix={target[:10]}") == [target]
    score = await redis.zscore(keys.search_index(), member(target, "log_event"))
    assert score is not None
    at = int(score)
    window = await ids(client, f"since={iso(at)}&until={iso(at)}")
    assert target in window
    assert set(window) <= set(made)
    assert set(await ids(client, f"until={iso(at)}")) >= set(made[:4])
    assert set(await ids(client, f"since={iso(at + 3_600_000)}")) == set()


@pytest.mark.parametrize(
    ("query", "reason"),
    [
        ("state=lost", "state must be"),
        ("state=failed,", "state must be"),
        ("function=nope", "function must be"),
        ("since=yesterday", "since must be an RFC 3339"),
        ("until=2026-12-03T09:00:00", "until must be an RFC 3339"),  # no offset
        ("since=2026-12-03T09:00:00%2B00:00&until=2026-12-03T08:00:00%2B00:00", "not be after"),
        ("prefix=a%20b", "prefix must be"),
        ("key=%20", "key must be"),
        ("key=" + "a" * 400, "key must be"),
        ("limit=0", "limit must be"),
        ("limit=101", "limit must be"),
        ("cursor=bm90LWEtY3Vyc29y", "cursor must be"),
        ("cursor=%25%25", "cursor must be"),
        ("stat=failed", "unknown parameter"),
        ("state=failed&state=waiting", "give state once"),
    ],
)
async def test_bad_search_parameters_are_400(
    client: TestClient[Any, Any], query: str, reason: str
) -> None:
    response = await client.get(f"/jobs?{query}")
    assert response.status == 400, await response.text()
    assert reason in (await response.json())["error"]


async def test_the_failed_jobs_list_route_still_answers(client: TestClient[Any, Any]) -> None:
    response = await client.get("/jobs/failed")
    assert response.status == 200
    assert (await response.json())["total"] == 0


async def test_the_index_is_trimmed_by_count_and_time_and_expires(
    redis: ArqRedis, settings: Settings
) -> None:
    index = SearchIndex(keep_ms=60_000, max_jobs=100)
    stale = keys.search_index("fn", "log_event")
    await redis.zadd(stale, {member("ancient", "log_event"): time.time() * 1000 - 120_000})
    for chunk in range(3):
        await asyncio.gather(
            *(
                enqueue(redis, "log_event", {"event": f"{chunk}-{n}"}, index=index)
                for n in range(50)
            )
        )
    for index_set in (keys.search_index(), stale):
        assert await redis.zcard(index_set) == 100  # the newest 100 of 150
        assert 0 < await redis.pttl(index_set) <= 60_000
    assert await redis.zscore(stale, member("ancient", "log_event")) is None
    newest = await redis.zrevrange(keys.search_index(), 0, 0)
    assert newest[0].decode().split()[0] in await queued(redis, settings)


async def test_bulk_retry_acts_on_each_job_once_when_two_operators_press_at_once(
    client: TestClient[Any, Any],
    run_worker: RunWorker,
    smtp_server: SmtpRecorder,
    redis: ArqRedis,
    settings: Settings,
) -> None:
    smtp_server.replies = [REFUSED] * 3
    failed = [
        await accepted_task(client, "/send-email", email("ann@example.com", f"m{n}"))
        for n in range(3)
    ]
    await run_worker()  # the three refusals go to ann's three
    await accepted_task(client, "/send-email", email("bob@example.com"))  # succeeds
    await run_worker()
    filters = {"key": "ann@example.com", "state": "failed"}

    wrong = await client.post("/jobs/bulk", json={**filters, "action": "retry", "expected": 2})
    assert wrong.status == 409
    assert (await wrong.json())["count"] == 3
    assert await queued(redis, settings) == []  # nothing was done

    body = {**filters, "action": "retry", "expected": 3}
    answers = await asyncio.gather(*(client.post("/jobs/bulk", json=body) for _ in range(2)))
    results = [await answer.json() for answer in answers]
    for answer, result in zip(answers, results, strict=True):
        assert answer.status in (200, 409), result
    done = [job for result in results for job in result.get("done", [])]
    assert sorted(done) == sorted(failed)  # each once, between the two
    assert sorted(await queued(redis, settings)) == sorted(failed)
    for job_id in failed:
        requeued = await redis.hget(keys.job_meta(job_id), "requeued")  # type: ignore[misc]
        assert requeued == b"1"

    smtp_server.replies = []
    await run_worker()
    succeeded = await ids(client, "key=ann@example.com&state=succeeded")
    assert succeeded == await newest_first(redis, failed)


async def test_bulk_cancel_and_delete_and_the_bound_per_call(
    client: TestClient[Any, Any],
    aiohttp_client: Any,
    run_worker: RunWorker,
    smtp_server: SmtpRecorder,
    redis: ArqRedis,
    settings: Settings,
) -> None:
    later = [
        await accepted_task(client, "/send-email", {**email(f"u{n}@example.com"), "delay": 600})
        for n in range(3)
    ]
    small = settings.model_copy(update={"bulk_max_jobs": 2})
    bounded = await aiohttp_client(create_app(small), headers=AUTH_HEADERS)
    body = {"state": "deferred", "action": "cancel", "expected": 2}
    response = await bounded.post("/jobs/bulk", json=body)
    result = await response.json()
    assert response.status == 200, result
    assert result["more"] is True
    *older, oldest = await newest_first(redis, later)
    assert sorted(result["done"]) == sorted(older)  # the newest two
    assert await queued(redis, settings) == [oldest]
    again = await (await bounded.post("/jobs/bulk", json={**body, "expected": 1})).json()
    assert again["done"] == [oldest]
    assert again["more"] is False
    assert await ids(client, "state=cancelled") == await newest_first(redis, later)

    smtp_server.replies = [REFUSED]
    doomed = await accepted_task(client, "/send-email", email("zed@example.com"))
    await run_worker()
    response = await client.post(
        "/jobs/bulk", json={"state": "failed", "action": "delete", "expected": 1}
    )
    assert (await response.json())["done"] == [doomed]
    assert (await (await client.get("/jobs/failed")).json())["total"] == 0


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        ({"action": "explode", "expected": 1}, "action"),
        ({"action": "retry"}, "expected"),
        ({"action": "retry", "expected": -1}, "expected"),
        ({"action": "retry", "expected": 1, "state": "lost"}, "state must be"),
        ({"action": "retry", "expected": 1, "colour": "red"}, "colour"),
    ],
)
async def test_a_bad_bulk_request_is_400_and_changes_nothing(
    client: TestClient[Any, Any],
    redis: ArqRedis,
    settings: Settings,
    body: dict[str, Any],
    reason: str,
) -> None:
    task = await accepted_task(client, "/send-email", email("ann@example.com"))
    response = await client.post("/jobs/bulk", json={**body, "action": body["action"]})
    assert response.status == 400, await response.text()
    assert reason in (await response.json())["error"]
    assert await queued(redis, settings) == [task]


INDEXED_JOBS = 10_000
RECIPIENTS = 100


async def test_index_cost_per_job_and_search_latency(
    redis: ArqRedis, settings: Settings, capsys: pytest.CaptureFixture[str]
) -> None:
    """The figures README "Job search" gives: bytes per job and search times over 10,000
    indexed jobs (100 per recipient). Bounds are loose: a shared machine is slow."""
    index = SearchIndex.from_settings(settings)
    for chunk in range(0, INDEXED_JOBS, 500):
        await asyncio.gather(
            *(
                enqueue(
                    redis,
                    "send_email",
                    email(f"r{n % RECIPIENTS}@example.com"),
                    index=index,
                    search_keys=(f"r{n % RECIPIENTS}@example.com",),
                )
                for n in range(chunk, chunk + 500)
            )
        )
    index_sets = [keys.search_index(), keys.search_index("fn", "send_email")]
    index_sets += [keys.search_index("key", f"r{n}@example.com") for n in range(RECIPIENTS)]
    used = 0
    for index_set in index_sets:
        used += int(await redis.memory_usage(index_set, samples=0) or 0)
    per_job = used / INDEXED_JOBS
    assert 50 < per_job < 400, per_job  # three sorted-set entries of ~42-byte members

    timings = {}
    for name, query, limit in [
        ("by recipient, page of 20", "key=r7@example.com", 20),
        ("by function, page of 100", "function=send_email", 100),
        ("by id prefix (no match: 5,000 entries looked at)", "prefix=zz", 20),
        ("by state with no match (5,000 entries looked at)", "state=failed", 20),
    ]:
        name_value = query.split("=")
        parsed = search_query({name_value[0]: name_value[1]}, REGISTRY)
        started = time.perf_counter()
        rounds = 5
        for _ in range(rounds):
            page = await search(redis, settings.queue_name, parsed, limit=limit)
        timings[name] = (time.perf_counter() - started) / rounds * 1000
        assert page.jobs or page.examined == 5000
    with capsys.disabled():
        print(f"\nsearch index: {per_job:.0f} bytes per job (MEMORY USAGE, {INDEXED_JOBS} jobs)")
        for name, ms in timings.items():
            print(f"search {name}: {ms:.1f} ms")
    assert timings["by recipient, page of 20"] < 500


@pytest.mark.parametrize("action", ["cancel", "delete"])
async def test_bulk_cancel_and_delete_act_once_when_two_operators_press_at_once(
    client: TestClient[Any, Any],
    run_worker: RunWorker,
    smtp_server: SmtpRecorder,
    redis: ArqRedis,
    settings: Settings,
    action: str,
) -> None:
    if action == "delete":
        smtp_server.replies = [REFUSED] * 3
    delay = {"delay": 600} if action == "cancel" else {}
    made = [
        await accepted_task(client, "/send-email", {**email(f"u{n}@example.com"), **delay})
        for n in range(3)
    ]
    if action == "delete":
        await run_worker()  # the three fail (deferred ones stay queued, untouched)
    state = "deferred" if action == "cancel" else "failed"
    body = {"state": state, "action": action, "expected": 3}
    answers = await asyncio.gather(*(client.post("/jobs/bulk", json=body) for _ in range(2)))
    results = [await answer.json() for answer in answers]
    done = [job for result in results for job in result.get("done", [])]
    assert sorted(done) == sorted(made), results  # each once, between the two
    if action == "cancel":
        assert await queued(redis, settings) == []
    else:  # off the failed-jobs list; their status stays FAILURE until it expires
        assert (await (await client.get("/jobs/failed")).json())["total"] == 0
