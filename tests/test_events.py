"""POST /events: an object or a plain string, logged by the worker as one JSON line either way."""

from __future__ import annotations

import json
import logging
from typing import Any

import pytest
from aiohttp.test_utils import TestClient
from arq.connections import ArqRedis

from service.observability.logs import JsonFormatter
from settings import Settings
from tests.conftest import RunWorker, accepted_task, assert_refused, queued, status_of


def event_lines(caplog: pytest.LogCaptureFixture) -> list[dict[str, Any]]:
    """The log_event lines as the worker writes them (LOG_FORMAT=json): one JSON object each,
    whose message is the event's own JSON."""
    lines = []
    for record in caplog.records:
        if record.name == "jobservice.events":
            text = JsonFormatter().format(record)
            assert "\n" not in text, "one line per event"
            lines.append(json.loads(json.loads(text)["message"]))
    return lines


@pytest.mark.parametrize(
    "event",
    ["User logged in", {"type": "signup", "plan": "pro"}, "x" * 1000, "Ünïcödé 日本 \u2764\ufe0f"],
    ids=["string", "object", "1000-characters", "unicode"],
)
async def test_an_event_is_logged_as_one_json_line(
    client: TestClient[Any, Any],
    run_worker: RunWorker,
    caplog: pytest.LogCaptureFixture,
    event: str | dict[str, Any],
) -> None:
    task_id = await accepted_task(client, "/events", {"event": event})
    with caplog.at_level(logging.INFO, logger="jobservice.events"):
        await run_worker()
    assert (await status_of(client, task_id))["status"] == "SUCCESS"
    assert event_lines(caplog) == [{"job_id": task_id, "event": event}]


async def test_post_jobs_takes_a_string_event_too(
    client: TestClient[Any, Any], run_worker: RunWorker, caplog: pytest.LogCaptureFixture
) -> None:
    body = {"function": "log_event", "kwargs": {"event": "User logged in"}}
    task_id = await accepted_task(client, "/jobs", body)
    with caplog.at_level(logging.INFO, logger="jobservice.events"):
        await run_worker()
    assert event_lines(caplog) == [{"job_id": task_id, "event": "User logged in"}]


@pytest.mark.parametrize(
    ("event", "reason"),
    [
        ("", "at least 1 character"),
        ("x" * 1001, "at most 1000 characters"),
        ("logged in\nFAKE log line", "control characters"),
        ("a\x00b", "control characters"),
        ("admin\u202e", "U+202E"),
        (17, "event"),
        (["a"], "event"),
        (None, "event"),
    ],
)
async def test_a_bad_event_is_400_and_queues_nothing(
    client: TestClient[Any, Any],
    redis: ArqRedis,
    settings: Settings,
    event: object,
    reason: str,
) -> None:
    response = await client.post("/events", json={"event": event})
    await assert_refused(response, 400, reason, redis, settings)
    assert await queued(redis, settings) == []
