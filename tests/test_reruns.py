"""What a re-run finds after its worker died mid-job, and that it still finishes once."""

from __future__ import annotations

from typing import Any

from aiohttp.test_utils import TestClient
from arq.connections import ArqRedis

from service.runtime import job_key
from tests.conftest import RunWorker, SmtpRecorder, status_of


async def _register(client: TestClient[Any, Any], email: str) -> dict[str, Any]:
    response = await client.post("/register", json={"name": "Bo", "email": email})
    assert response.status == 201, await response.text()
    body: dict[str, Any] = await response.json()
    return body


async def test_a_rerun_takes_over_the_welcome_lock_its_killed_attempt_left(
    client: TestClient[Any, Any],
    redis: ArqRedis,
    run_worker: RunWorker,
    smtp_server: SmtpRecorder,
) -> None:
    user = await _register(client, "bo@example.com")
    # what a worker killed while sending leaves behind: the lock, holding this job's id
    await redis.set(job_key("lock", "welcome", user["id"]), user["task_id"], ex=600)

    await run_worker()

    done = await status_of(client, user["task_id"])
    assert done["status"] == "SUCCESS", done
    assert done["result"]["status"] == "sent"
    assert [m.recipients for m in smtp_server.messages] == [["bo@example.com"]]
    assert not await redis.exists(job_key("lock", "welcome", user["id"]))


async def test_a_welcome_lock_held_by_another_job_still_keeps_this_one_out(
    client: TestClient[Any, Any],
    redis: ArqRedis,
    run_worker: RunWorker,
    smtp_server: SmtpRecorder,
) -> None:
    user = await _register(client, "cy@example.com")
    await redis.set(job_key("lock", "welcome", user["id"]), "some-other-job", ex=600)

    await run_worker()

    failed = await status_of(client, user["task_id"])
    assert failed["status"] == "FAILURE"
    assert "another job is sending this user's welcome email" in failed["error"]
    assert smtp_server.messages == []
