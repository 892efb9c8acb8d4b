"""Jobs and results live in Redis as JSON, never pickle; failures keep their type and reason."""

from __future__ import annotations

import json
import pickle
import time
from typing import Any

from aiohttp.test_utils import TestClient
from arq.connections import ArqRedis

from service.store.serialization import JobError, describe_exception, deserialize, serialize
from settings import Settings
from tests.conftest import RunWorker, SmtpRecorder, status_of


def test_exceptions_round_trip_as_type_and_message() -> None:
    raw = serialize({"r": ValueError("bad thing"), "n": (1, 2)})
    assert json.loads(raw) == {
        "r": {"__exception__": "ValueError", "message": "bad thing"},
        "n": [1, 2],
    }
    back = deserialize(raw)
    assert isinstance(back["r"], JobError)
    assert describe_exception(back["r"]) == "ValueError: bad thing"


async def test_queued_jobs_and_results_are_plain_json(
    client: TestClient[Any, Any], redis: ArqRedis, run_worker: RunWorker, smtp_server: SmtpRecorder
) -> None:
    smtp_server.replies = ["550 no such user"]
    email = {"to": "a@example.com", "subject": "s", "body": "b"}
    response = await client.post("/send-email", json=email)
    task_id = (await response.json())["task_id"]
    stored_job = await redis.get(f"arq:job:{task_id}")
    assert stored_job is not None
    # the request's id rides along for log correlation; the job wrapper strips it again
    request_id = response.headers["X-Request-ID"]
    assert json.loads(stored_job)["k"] == {**email, "_request_id": request_id}

    await run_worker()

    stored_result = await redis.get(f"arq:result:{task_id}")
    assert stored_result is not None
    result = json.loads(stored_result)
    assert result["s"] is False
    assert result["r"]["__exception__"] == "PermanentError"
    assert "550 no such user" in result["r"]["message"]


class Boom:
    """Would run code if unpickled: the service must never unpickle what it finds in Redis."""

    ran = False

    def __reduce__(self) -> tuple[Any, ...]:
        return (setattr, (Boom, "ran", True))


async def test_a_pickled_job_planted_in_redis_is_never_unpickled(
    client: TestClient[Any, Any], redis: ArqRedis, settings: Settings, run_worker: RunWorker
) -> None:
    payload = pickle.dumps({"t": 1, "f": "log_event", "a": [], "k": {"event": Boom()}, "et": 0})
    Boom.ran = False
    await redis.set("arq:job:planted", payload)
    await redis.zadd(settings.queue_name, {"planted": int(time.time() * 1000)})

    queued_view = await status_of(client, "planted")
    assert queued_view["status"] == "FAILURE"
    assert "could not be read" in queued_view["error"]

    await run_worker()

    assert Boom.ran is False
    done = await status_of(client, "planted")
    assert done["status"] == "FAILURE"
    assert "unable to deserialize job" in done["error"]
