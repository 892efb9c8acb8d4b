"""JSON log lines from the real processes: one per request, one per job attempt's end (and its
start, for an attempt still running after LOG_JOB_START_AFTER), and the request's id on the
lines of the jobs it queued."""

from __future__ import annotations

import asyncio
import json
import logging
import os
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from service.observability.logs import JsonFormatter, LineHandler, TextFormatter, logging_config
from service.observability.origin import log_fields, request_id_from
from settings import Settings, SettingsError, load_settings
from tests.conftest import AUTH_HEADERS, TEST_API_TOKEN, free_port
from tests.processes import ServiceProcess as Process
from tests.scraping import sample
from tests.test_worker_process import service_env
from tests.waiting import wait_until
from tests.webhook_targets import HeldTarget, hook_url

START_LINE_AFTER = 0.3  # seconds: the worker's LOG_JOB_START_AFTER in these tests


@pytest.fixture
def services(settings: Settings, tmp_path: Path) -> Iterator[tuple[str, str, Process, Process]]:
    """``python -m web`` and the worker as `make worker` starts it, both logging JSON."""
    web_port, metrics_port = free_port(), free_port()
    env = service_env(
        settings,
        WEB_PORT=str(web_port),
        WORKER_METRICS_PORT=str(metrics_port),
        LOG_FORMAT="json",
        API_TOKENS=TEST_API_TOKEN,
        LOG_JOB_START_AFTER=str(START_LINE_AFTER),
        WEBHOOK_ALLOWED_HOSTS="127.0.0.1",  # the held webhook target below
    )
    web = Process(["-m", "web"], env, tmp_path / "web.log")
    worker_command = ["-m", "arq", "service.WorkerSettings", "--custom-log-dict", "service.LOGGING"]
    worker = Process(worker_command, env, tmp_path / "worker.log")
    try:
        yield f"http://127.0.0.1:{web_port}", f"http://127.0.0.1:{metrics_port}", web, worker
    finally:
        web.stop()
        worker.stop()


async def _answers(session: aiohttp.ClientSession, url: str) -> bool:
    try:
        async with session.get(url) as response:
            return response.status == 200
    except aiohttp.ClientConnectionError:
        return False


async def test_one_request_id_finds_the_request_and_its_jobs_lines(
    services: tuple[str, str, Process, Process], redis: Any
) -> None:
    web_url, worker_url, web, worker = services
    request_id = "checkout-7f3a9c"
    async with aiohttp.ClientSession(headers=AUTH_HEADERS) as session:
        await wait_until(lambda: _answers(session, f"{web_url}/health"), within=30)
        await wait_until(lambda: _answers(session, f"{worker_url}/metrics"), within=30)
        async with session.post(
            f"{web_url}/events",
            json={"event": {"email": "private@example.com", "type": "signup"}},
            headers={"X-Request-ID": request_id},
        ) as response:
            assert response.status == 202
            assert response.headers["X-Request-ID"] == request_id
            task_id = (await response.json())["task_id"]

        async def finished() -> bool:
            async with session.get(f"{web_url}/task-status/{task_id}") as status:
                return bool((await status.json())["status"] == "SUCCESS")

        await wait_until(finished, within=30)
        async with session.get(f"{worker_url}/metrics") as response:
            worker_metrics = await response.text()
    assert sample(worker_metrics, "jobservice_jobs_succeeded_total", function="log_event") == 1

    await asyncio.gather(asyncio.to_thread(web.stop), asyncio.to_thread(worker.stop))
    # every line parses as JSON
    web_lines, worker_lines = (
        await asyncio.to_thread(web.lines),
        await asyncio.to_thread(worker.lines),
    )
    arq_lines = [line for line in worker_lines if line["logger"].startswith("arq")]
    # the job loop (service.engine.loop) writes no arq line per successful job, ours say it all;
    # nothing arq writes carries job arguments: they may hold addresses and bodies
    assert not any(task_id in line["message"] for line in arq_lines)
    assert not any("private@example.com" in line["message"] for line in arq_lines)

    [request_line] = [line for line in web_lines if line.get("request_id") == request_id]
    assert request_line["event"] == "request"
    assert request_line["method"] == "POST"
    assert request_line["route"] == "/events"
    assert request_line["status"] == 202
    assert request_line["duration_ms"] >= 0

    mine = [line for line in worker_lines if line.get("request_id") == request_id]
    events = [line.get("event") for line in mine]
    # a quick attempt writes one line, at its end, which carries the queue wait too
    assert "job_start" not in events
    assert events[-1] == "job_end"
    end = mine[-1]
    assert end["job_id"] == task_id
    assert end["function"] == "log_event"
    assert end["attempt"] == 1
    assert end["outcome"] == "success"
    assert end["duration_ms"] >= 0
    assert end["queue_wait_ms"] >= 0
    # the job's own line (the logged event) carries the request id too
    assert any(line["logger"] == "jobservice.events" for line in mine)


def _written(process: Process) -> list[dict[str, Any]]:
    """The whole lines a running process has written so far."""
    text = process.log.read_text()
    return [json.loads(line) for line in text.splitlines() if line.endswith("}")]


async def test_an_attempt_still_running_gets_its_start_line_while_it_runs(
    services: tuple[str, str, Process, Process], aiohttp_server: Any
) -> None:
    web_url, _, _, worker = services
    target = HeldTarget()
    url = await hook_url(aiohttp_server, target.handle)
    async with aiohttp.ClientSession(headers=AUTH_HEADERS) as session:
        await wait_until(lambda: _answers(session, f"{web_url}/health"), within=30)
        async with session.post(f"{web_url}/webhooks", json={"url": url, "payload": {}}) as answer:
            assert answer.status == 202
            task_id = (await answer.json())["task_id"]
        await asyncio.wait_for(target.arrived.wait(), 30)

        async def start_lines() -> list[dict[str, Any]]:
            return [
                line
                for line in await asyncio.to_thread(_written, worker)
                if line.get("event") == "job_start" and line.get("job_id") == task_id
            ]

        async def started() -> bool:
            return bool(await start_lines())

        # written while the attempt is still held at the target: a log read after a kill
        # would name it
        await wait_until(started, within=10)
        [start] = await start_lines()
        assert target.finished == 0
        assert start["function"] == "deliver_webhook"
        assert start["attempt"] == 1
        assert start["running_ms"] == START_LINE_AFTER * 1000
        assert start["queue_wait_ms"] >= 0
        target.release.set()

        async def succeeded() -> bool:
            async with session.get(f"{web_url}/task-status/{task_id}") as status:
                return bool((await status.json())["status"] == "SUCCESS")

        await wait_until(succeeded, within=30)
    await asyncio.to_thread(worker.stop)
    lines = await asyncio.to_thread(worker.lines)
    mine = [line for line in lines if line.get("job_id") == task_id]
    events = [line.get("event") for line in mine if line.get("event")]
    assert events == ["job_start", "job_end"]
    assert mine[-1]["duration_ms"] >= START_LINE_AFTER * 1000


def test_an_unsafe_request_id_is_replaced() -> None:
    assert request_id_from("abc-123_X.y:z") == "abc-123_X.y:z"
    for bad in ["", "has space", "a" * 129, 'quote"', "new\nline", None]:
        replaced = request_id_from(bad)
        assert replaced != bad
        assert len(replaced) == 32
        assert int(replaced, 16) >= 0


def _format(formatter: logging.Formatter, **extra: Any) -> str:
    record = logging.makeLogRecord(
        {
            "name": "jobservice.test",
            "levelname": "INFO",
            "levelno": 20,
            "msg": "hi %s",
            "args": ("x",),
        }
    )
    for key, value in extra.items():
        setattr(record, key, value)
    token = log_fields.set({"request_id": "r-1"})
    try:
        return formatter.format(record)
    finally:
        log_fields.reset(token)


def test_json_lines_carry_context_and_extra_fields() -> None:
    line = json.loads(_format(JsonFormatter(), outcome="success"))
    assert line["message"] == "hi x"
    assert line["level"] == "INFO"
    assert line["logger"] == "jobservice.test"
    assert line["request_id"] == "r-1"
    assert line["pid"] == os.getpid()
    assert line["outcome"] == "success"
    assert line["time"].endswith("+00:00")


def test_text_lines_append_the_fields() -> None:
    text = _format(TextFormatter(), outcome="success")
    assert "INFO jobservice.test hi x" in text
    assert text.endswith("request_id=r-1 outcome=success")


def test_log_settings_are_checked(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LOG_FORMAT", "TEXT")
    monkeypatch.setenv("LOG_LEVEL", "warning")
    loaded = load_settings()
    assert (loaded.log_format, loaded.log_level) == ("text", "WARNING")
    monkeypatch.setenv("LOG_FORMAT", "xml")
    with pytest.raises(SettingsError, match="LOG_FORMAT"):
        load_settings()


@pytest.mark.parametrize(
    "created",
    [
        1_795_000_000.0,
        1_795_000_000.0005,
        1_795_000_000.9994999,
        1_795_000_000.9999994,
        1_795_000_000.9999996,  # rounds up into the next second
        1_795_000_001.123456,
        1_795_000_000.5,  # back in time: another second than the one just formatted
    ],
)
def test_json_lines_time_is_what_datetime_writes(created: float) -> None:
    """The formatter keeps each second's text (logs._Clock); the time must not move."""
    formatter = JsonFormatter()
    for when in (created - 1, created):  # the second formatted just before differs
        record = logging.makeLogRecord({"msg": "x", "created": when})
        line = json.loads(formatter.format(record))
        expected = datetime.fromtimestamp(when, tz=UTC).isoformat(timespec="milliseconds")
        assert line["time"] == expected


class _EarlyField(logging.LogRecord):
    """A record factory's record that sets a field before LogRecord's own attributes."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.tenant = "t-1"
        super().__init__(*args, **kwargs)


def test_every_extra_field_is_on_the_line_whatever_order_the_record_was_built_in() -> None:
    """Lines look for their fields past LogRecord's own attributes (logs.record_fields) only
    when the record was laid out by LogRecord.__init__; any other record is read whole."""
    formatter = JsonFormatter()
    early = _EarlyField("jobservice.test", logging.INFO, "", 0, "hi", (), None)
    assert json.loads(formatter.format(early))["tenant"] == "t-1"
    logger = logging.getLogger("jobservice.test")
    made = logger.makeRecord(logger.name, logging.INFO, "", 0, "hi", (), None, extra={"n": 1})
    made.message = "already formatted by another handler"  # a standard name: never a field
    line = json.loads(formatter.format(made))
    assert (line["n"], line["message"]) == (1, "hi")
    assert {"msg", "args", "levelno", "created", "thread", "taskName"}.isdisjoint(line)


@pytest.mark.parametrize("buffering", [1, 8192], ids=["line-buffered", "block-buffered"])
def test_each_line_reaches_its_stream_at_once(tmp_path: Path, buffering: int) -> None:
    """LineHandler leaves out the flush only where the stream flushes at each newline itself
    (stderr): a line written to a block-buffered stream still reaches the file at once."""
    path = tmp_path / "log"
    with path.open("w", buffering=buffering) as stream:
        handler = LineHandler(stream)
        handler.setFormatter(JsonFormatter())
        logger = logging.getLogger(f"test.line_handler.{buffering}")
        logger.addHandler(handler)
        logger.propagate = False
        try:
            logger.warning("first", extra={"n": 1})
            assert json.loads(path.read_text())["n"] == 1  # read through another file object
            logger.warning("second")
            assert [json.loads(line)["message"] for line in path.read_text().splitlines()] == [
                "first",
                "second",
            ]
        finally:
            logger.removeHandler(handler)


def test_a_stream_that_fails_is_reported_not_raised(capsys: pytest.CaptureFixture[str]) -> None:
    class Broken:
        def write(self, text: str) -> int:
            raise OSError("disk full")

    handler = LineHandler(Broken())  # type: ignore[call-overload]
    handler.setFormatter(JsonFormatter())
    record = logging.LogRecord("test", logging.INFO, __file__, 1, "lost", (), None)
    handler.handle(record)  # no exception reaches the caller: a job must not fail on its log
    assert "disk full" in capsys.readouterr().err  # logging's own report of the failure


def test_the_service_logs_through_line_handler() -> None:
    config = logging_config(Settings())
    assert config["handlers"]["stderr"]["()"] is LineHandler
