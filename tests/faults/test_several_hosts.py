"""Several hosts, shown: a data host, a web host and two worker hosts, one killed under load.

Each host is a Linux network namespace on a bridge of the test's own (tests/netns.py), in a
private subnet no route leads out of. The **data host** runs a Redis master and its replica
under three sentinels, a private PostgreSQL cluster, moto's S3 server and an SMTP server that
writes what it accepts to a file (tests/faults/data_host.py). The **web host** runs
``python -m web``; each **worker host** the real worker (tests/faults/due_cron_worker.py: the
worker ``arq service.WorkerSettings`` builds, its cron jobs due on the test's cue) with an
empty DATA_DIR of its own. They are configured only through the environment, as
deploy/env/*.env configures machines: Sentinel, ``DATABASE_URL=postgresql://...``,
``STORAGE_URL=s3://...``, SMTP. The test process, in the machine's own namespace, reaches the
web host (and, to check what landed, the data host) through unix sockets that a forwarder on a
**client host** listens on (tests/netns_door.py): every byte between hosts crosses the bridge.

Shown, in order:

1. the seed's flows through the web host: an email; a user registered (its row in
   PostgreSQL) and its welcome email; an image uploaded and its thumbnail (both objects in
   the bucket); the daily report (its object in the bucket, counting that user, mailed);
2. both cron schedules, due while both worker hosts are up, run once between them;
3. a bounded load of emails, one in SLOW_EVERY held by the SMTP server for HOLD seconds, while
   one worker host is killed whole: every process in its namespace SIGKILLed, then its cable
   pulled. Every 202 completes; every job the dead host was running runs again on the other
   host; no email arrives twice except one accepted within KNOWN_WINDOW before the kill (its
   "sent" marker may not have been written: README "Reliability"); the figures are printed.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import os
import sys
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import pytest
from botocore.auth import S3SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials
from PIL import Image
from redis.asyncio import Redis

from settings import Settings
from tests import netns
from tests.conftest import AUTH_HEADERS, TEST_API_TOKEN
from tests.faults import mail_log
from tests.faults.conftest import service_env
from tests.faults.processes import Process
from tests.images import image_bytes
from tests.netns import Host, HostNetwork
from tests.postgres import ClusterFolder, PostgresCluster
from tests.s3_server import REGION
from tests.waiting import wait_until

WEB_PORT = 8080
PREFIX = "hosts"  # STORAGE_URL's prefix in the bucket
HOLD = 3.0  # seconds the SMTP server holds the reply to a "slow" email
EMAILS = 300  # the load: this many POST /send-email...
RATE = 50  # ...this many a second...
SLOW_EVERY = 7  # ...one in this many held HOLD seconds (odd: the workers take turns)
KILL_AFTER = 2.0  # seconds into the load the victim host dies
KNOWN_WINDOW = 0.5  # seconds before the kill in which an email may go out twice
NO_HANG = 10.0  # an answer slower than this counts as none
STARTUP = 60  # seconds a host may take to start on a busy 2-core machine
CRON_LEAD = 12  # seconds from the cue to the cron schedules being due
DONE_WITHIN = 60  # seconds after the load for every accepted job to finish
FINAL = ("SUCCESS", "FAILURE", "CANCELLED")

pytestmark = pytest.mark.timeout(180)


@dataclass
class Hosts:
    data: Host
    web: Host
    workers: list[Host]
    client: Host


@dataclass
class Launcher:
    """Starts processes inside hosts, their output in ``folder``; reaps them at the end."""

    folder: Path
    started: list[Process] = field(default_factory=list)

    async def start(self, host: Host, name: str, argv: list[str], env: dict[str, str]) -> Process:
        log = self.folder / f"{name}.log"
        process = Process(name, host.argv(*argv), env, log)
        self.started.append(await process.start())
        return process


@dataclass
class Answer:
    n: int
    status: int  # 0: no answer within NO_HANG
    task_id: str | None


@pytest.fixture
def network() -> Iterator[HostNetwork]:
    netns.require()
    network = HostNetwork()
    try:
        network.create()
        yield network
    finally:
        network.remove()  # every process in every namespace SIGKILLed, then the namespaces


@pytest.fixture
def hosts(network: HostNetwork) -> Hosts:
    return Hosts(
        data=network.add_host("data", 2),
        web=network.add_host("web", 3),
        workers=[network.add_host("worker1", 11), network.add_host("worker2", 12)],
        client=network.add_host("client", 20),
    )


@pytest.fixture
def pg_folder(network: HostNetwork) -> Iterator[ClusterFolder]:
    """initdb's folder, open to the test subnet; stopped before the namespaces go, so the
    server removes its shared memory itself."""
    folder = ClusterFolder()
    folder.trust(f"{netns.SUBNET}.0/24")
    try:
        yield folder
    finally:
        with contextlib.suppress(AssertionError):  # never started, or already gone
            PostgresCluster(folder, 0).stop("immediate")
        folder.remove()


@pytest.fixture
async def launcher(tmp_path: Path, network: HostNetwork) -> AsyncIterator[Launcher]:
    launcher = Launcher(tmp_path)
    yield launcher
    for process in launcher.started:
        await process.kill()  # this process's own children; network.remove() takes the rest
        lines = (await process.output()).splitlines()
        print(f"----- {process.name} (last 30 of {len(lines)} lines) -----", *lines[-30:], sep="\n")


def _python(*args: str) -> list[str]:
    return [sys.executable, *args]


def _plain_env() -> dict[str, str]:
    return {**os.environ, "PYTHONUNBUFFERED": "1"}


async def _start_data_host(
    launcher: Launcher, host: Host, folder: Path, pg_folder: ClusterFolder
) -> dict[str, Any]:
    argv = _python("-m", "tests.faults.data_host", host.address, str(folder))
    argv += [str(pg_folder.path), str(HOLD)]
    process = await launcher.start(host, "data-host", argv, _plain_env())
    ready: dict[str, Any] = json.loads(await _file_from(process, folder / "ready.json"))
    return ready


async def _file_from(process: Process, path: Path) -> str:
    """The text of ``path`` once ``process`` has written it."""

    async def written() -> bool:
        if not process.running():
            raise AssertionError(f"{process.name} exited:\n{await process.output()}")
        return await asyncio.to_thread(path.exists)

    await wait_until(written, within=STARTUP, interval=0.1)
    return await asyncio.to_thread(path.read_text)


async def _open_door(launcher: Launcher, host: Host, folder: Path, targets: dict[str, str]) -> Path:
    """Unix sockets ``folder/<name>`` forwarded from ``host`` to each ``targets[name]``."""
    pairs = [f"{name}={target}" for name, target in targets.items()]
    argv = _python("-m", "tests.netns_door", str(folder), *pairs)
    process = await launcher.start(host, "door", argv, _plain_env())
    await _file_from(process, folder / "ready")
    return folder


def _settings(ready: dict[str, Any], web: Host) -> Settings:
    """The service's settings, as deploy/env/common.env + web.env / worker.env give them."""
    smtp_host, smtp_port = ready["smtp"].rsplit(":", 1)
    key_id, secret = ready["s3_keys"]
    return Settings(
        redis_url="redis://named-by-the-sentinels.invalid/0",
        redis_sentinels=tuple(ready["sentinels"]),
        redis_sentinel_master=ready["master_name"],
        redis_min_replicas_ack=1,  # as deploy/env/common.env: a 202 is on two Redis servers
        redis_replica_ack_timeout=2000,
        redis_socket_timeout=3,
        database_url=ready["database_url"],
        storage_url=f"s3://{ready['bucket']}/{PREFIX}",
        s3_endpoint_url=ready["s3_endpoint"],
        aws_access_key_id=key_id,
        aws_secret_access_key=secret,
        smtp_host=smtp_host,
        smtp_port=int(smtp_port),
        smtp_timeout=HOLD + 3,
        email_job_timeout=HOLD + 4,  # a dead host's email runs again at most this + margin later
        job_lock_margin=2,
        worker_max_jobs=20,
        retry_backoff_base=0.1,
        retry_backoff_max=1,
        report_recipients=("ops@example.com",),
        api_tokens=(TEST_API_TOKEN,),
        # a job_start line at every attempt's start: the test reads from the worker logs which
        # attempts the killed host was running, however long they had run
        log_job_start_after=0,
        rate_limit_per_token="",
        rate_limit_per_recipient="",
        web_host=web.address,
        web_port=WEB_PORT,
    )


def _client(door: Path, web: Host) -> aiohttp.ClientSession:
    return aiohttp.ClientSession(
        f"http://{web.address}:{WEB_PORT}",
        connector=aiohttp.UnixConnector(path=str(door / "web"), limit=20),
        headers=AUTH_HEADERS,
        timeout=aiohttp.ClientTimeout(total=NO_HANG),
    )


async def _accepted(http: aiohttp.ClientSession, path: str, **kwargs: Any) -> dict[str, Any]:
    async with http.post(path, **kwargs) as response:
        body: dict[str, Any] = await response.json()
        assert response.status in (201, 202), body
        return body


async def _status(http: aiohttp.ClientSession, task_id: str) -> dict[str, Any]:
    async with http.get(f"/task-status/{task_id}") as response:
        body: dict[str, Any] = await response.json()
        assert response.status == 200, body
        return body


async def _settled(http: aiohttp.ClientSession, task_id: str) -> dict[str, Any]:
    """The job's status once it has finished, for good or bad."""
    body: dict[str, Any] = {}

    async def finished() -> bool:
        nonlocal body
        body = await _status(http, task_id)
        return body["status"] in FINAL

    await wait_until(finished, within=STARTUP, interval=0.1)
    return body


def _task_of(message_id: str) -> str:
    """jobs/mail: a message's id is ``<task id@sender's domain>``."""
    return message_id.strip("<>").rsplit("@", 1)[0]


async def _mail(folder: Path) -> list[dict[str, Any]]:
    return await asyncio.to_thread(mail_log.read, folder / "mail.jsonl")


async def _s3_object(door: Path, ready: dict[str, Any], key: str) -> bytes | None:
    """The object's bytes (None if there is none), read through the door with a plain signed
    GET: the test's own view of the bucket, not the service's storage code."""
    url = f"{ready['s3_endpoint']}/{ready['bucket']}/{PREFIX}/{key}"
    request = AWSRequest("GET", url)
    S3SigV4Auth(Credentials(*ready["s3_keys"]), "s3", REGION).add_auth(request)
    connector = aiohttp.UnixConnector(path=str(door / "s3"))
    async with (
        aiohttp.ClientSession(connector=connector) as s3,
        s3.get(url, headers=dict(request.headers.items())) as response,
    ):
        if response.status == 404:
            return None
        assert response.status == 200, await response.text()
        return await response.read()


async def _seed_flows(
    http: aiohttp.ClientSession, door: Path, ready: dict[str, Any], data: Path
) -> None:
    """The seed's four flows through the web host, each to its final state and side effect."""
    email = await _accepted(
        http, "/send-email", json={"to": "ann@example.com", "subject": "Hi", "body": "Hi Ann!"}
    )
    user = await _accepted(
        http, "/register", json={"name": "Ann Lee", "email": "Ann.Lee@Example.com"}
    )
    photo = image_bytes()  # 1600x1200
    form = aiohttp.FormData()
    form.add_field("file", photo, filename="photo.jpg", content_type="image/jpeg")
    upload = await _accepted(http, "/upload", data=form)
    for body in (email, user, upload):
        assert (await _settled(http, body["task_id"]))["status"] == "SUCCESS"

    # the user is a row in PostgreSQL on the data host, its welcome email sent and marked
    pg = await asyncpg.connect(
        host=str(door / "pg"), port=5432, user="postgres", database="jobservice", timeout=10
    )
    try:
        rows = await pg.fetch("SELECT id, email, welcome_sent_at FROM users")
    finally:
        await pg.close()
    assert [(r["id"], r["email"]) for r in rows] == [(user["id"], "ann.lee@example.com")]
    assert rows[0]["welcome_sent_at"] is not None
    # the upload (stored by the web host) and its thumbnail (made by a worker host) in S3
    thumbnail = (await _status(http, upload["task_id"]))["result"]["thumbnail"]
    original = thumbnail.replace("_thumb", "")
    assert await _s3_object(door, ready, f"uploads/{original}") == photo
    small = Image.open(io.BytesIO(await _s3_object(door, ready, f"uploads/{thumbnail}") or b""))
    assert (small.format, small.size) == ("JPEG", (800, 600))

    today = datetime.now(UTC).date().isoformat()
    report = await _accepted(http, "/reports/daily", json={"day": today})
    done = await _settled(http, report["task_id"])
    assert done["status"] == "SUCCESS", done
    assert done["result"] == {"path": f"reports/{today}.json", "date": today}
    stored = json.loads(await _s3_object(door, ready, f"reports/{today}.json") or b"{}")
    assert stored["users_registered"] == 1, stored  # read from PostgreSQL by a worker host

    mail = {_task_of(m["message_id"]): m for m in await _mail(data)}
    assert mail[email["task_id"]]["to"] == ["ann@example.com"]
    assert mail[user["task_id"]]["subject"] == "Welcome Ann Lee!"
    assert mail[report["task_id"]]["subject"] == f"Daily report for {today}"


async def _job_lines(process: Process) -> list[dict[str, Any]]:
    """The worker's job_start / job_end log lines, in order (README "Logs")."""
    lines = []
    for line in (await process.output()).splitlines():
        if line.startswith("{") and line.endswith("}"):  # not a line cut by a SIGKILL
            entry = json.loads(line)
            if entry.get("event") in ("job_start", "job_end"):
                entry["at"] = datetime.fromisoformat(entry["time"]).timestamp()
                lines.append(entry)
    return lines


def _unfinished(lines: list[dict[str, Any]]) -> set[tuple[str, int]]:
    """(job id, attempt) of every attempt started and never ended."""
    started = {(e["job_id"], e["attempt"]) for e in lines if e["event"] == "job_start"}
    ended = {(e["job_id"], e["attempt"]) for e in lines if e["event"] == "job_end"}
    return started - ended


def _restarted(attempts: set[tuple[str, int]], lines: list[dict[str, Any]]) -> dict[str, float]:
    """For each (job id, attempt) that ``lines`` show a later attempt of: when it started."""
    later: dict[str, float] = {}
    for job, attempt in attempts:
        starts = [
            e["at"]
            for e in lines
            if e["event"] == "job_start" and e["job_id"] == job and e["attempt"] > attempt
        ]
        if starts:
            later[job] = min(starts)
    return later


async def _crons_ran(redis: Redis) -> list[str]:
    """arq's result key of every cron run: ``arq:result:cron:<function>:<due ms>``."""
    return sorted(key.decode() for key in await redis.keys("arq:result:cron:*"))


async def _send(http: aiohttp.ClientSession, n: int) -> Answer:
    subject = f"{mail_log.SLOW} #{n}" if n % SLOW_EVERY == 0 else f"#{n}"
    email = {"to": f"user{n}@example.com", "subject": subject, "body": "across hosts"}
    try:
        async with http.post("/send-email", json=email) as response:
            body = await response.json()
            return Answer(n, response.status, body.get("task_id"))
    except (aiohttp.ClientError, TimeoutError):
        return Answer(n, 0, None)


@dataclass
class Kill:
    at: float  # time.time() just before the first SIGKILL
    pids: list[int]  # every process the host had


async def _load_with_a_kill(
    http: aiohttp.ClientSession, network: HostNetwork, victim: Host
) -> tuple[list[Answer], Kill]:
    """EMAILS requests at RATE a second; the victim host dies KILL_AFTER seconds in: every
    process in it SIGKILLed, then its cable pulled."""
    loop = asyncio.get_running_loop()
    start = loop.time()
    requests = []
    kill: Kill | None = None
    for n in range(EMAILS):
        await asyncio.sleep(max(0.0, start + n / RATE - loop.time()))  # pacing, not waiting
        requests.append(asyncio.create_task(_send(http, n)))
        if kill is None and loop.time() - start >= KILL_AFTER:
            at = time.time()
            kill = Kill(at, await asyncio.to_thread(network.kill, victim))
            await asyncio.to_thread(network.unplug, victim)
    assert kill is not None
    return list(await asyncio.gather(*requests)), kill


async def _start_service(
    launcher: Launcher, hosts: Hosts, settings: Settings, folder: Path
) -> tuple[Process, list[Process], float]:
    """``python -m web`` on the web host and a worker on each worker host, each with its own
    empty DATA_DIR; the cron schedules are due CRON_LEAD seconds after the workers' cue.
    Returns the web process, the workers and the moment the schedules are due."""
    env = service_env(settings, data_dir=folder / "web-data")
    web = await launcher.start(hosts.web, "web", _python("-m", "web"), env)
    go = folder / "go"
    workers = []
    for host in hosts.workers:
        argv = _python("-m", "tests.faults.due_cron_worker", str(go))
        env = service_env(settings, data_dir=folder / f"{host.role}-data")
        workers.append(await launcher.start(host, host.role, argv, env))

    async def waiting_for_go() -> bool:
        return all(["waiting for go" in await worker.output() for worker in workers])

    await wait_until(waiting_for_go, within=STARTUP, interval=0.1)
    due = time.time() + CRON_LEAD
    cue = go.with_suffix(".tmp")
    await asyncio.to_thread(cue.write_text, str(due))
    await asyncio.to_thread(cue.replace, go)  # whole: no worker reads half a cue
    return web, workers, due


async def _all_up(http: aiohttp.ClientSession, processes: list[Process], workers: int) -> None:
    """Until /health on the web host answers and counts every worker."""

    async def up() -> bool:
        for process in processes:
            if not process.running():
                raise AssertionError(f"{process.name} exited:\n{await process.output()}")
        try:
            async with http.get("/health") as response:
                health = await response.json()
        except (aiohttp.ClientError, TimeoutError, ValueError):
            return False
        return response.status == 200 and health["worker"]["count"] == workers

    await wait_until(up, within=STARTUP, interval=0.2)


async def _quietly_until(condition: Callable[[], Awaitable[bool]], within: float) -> None:
    """Wait as wait_until does, but let the assertions after it say what is missing."""
    with contextlib.suppress(AssertionError):
        await wait_until(condition, within=within, interval=0.2)


async def test_a_worker_host_killed_under_load_loses_nothing(
    network: HostNetwork,
    hosts: Hosts,
    pg_folder: ClusterFolder,
    launcher: Launcher,
    tmp_path: Path,
) -> None:
    began = time.monotonic()
    every_host = [hosts.data, hosts.web, *hosts.workers, hosts.client]
    for host in every_host:  # nothing but the test subnet is reachable from any of them
        routes = await asyncio.to_thread(network.routes, host)
        assert [route.split()[0] for route in routes] == [f"{netns.SUBNET}.0/24"], routes
    data = tmp_path / "data-host"
    await asyncio.to_thread(data.mkdir)
    ready = await _start_data_host(launcher, hosts.data, data, pg_folder)
    targets = {
        "web": f"{hosts.web.address}:{WEB_PORT}",
        "s3": ready["s3_endpoint"].removeprefix("http://"),
        "redis": ready["master"],
        "pg/.s.PGSQL.5432": ready["postgres"],  # the name asyncpg looks for in a folder
    }
    door = await _open_door(launcher, hosts.client, tmp_path / "door", targets)
    settings = await asyncio.to_thread(_settings, ready, hosts.web)  # reads zoneinfo files
    web, workers, due = await _start_service(launcher, hosts, settings, tmp_path)
    survivor, victim = workers
    async with (
        _client(door, hosts.web) as http,
        Redis(unix_socket_path=str(door / "redis")) as redis,
    ):
        await _all_up(http, [web, *workers], len(workers))
        # arq enqueues a cron job up to a second early: both hosts were up and in the race
        assert time.time() < due - 1, "the worker hosts started after the cron schedules"
        setup = time.monotonic() - began
        await _seed_flows(http, door, ready, data)

        async def both_crons_ran() -> bool:
            return len(await _crons_ran(redis)) >= 2

        await wait_until(both_crons_ran, within=CRON_LEAD + STARTUP, interval=0.2)

        answers, kill = await _load_with_a_kill(http, network, hosts.workers[1])
        accepted = {a.task_id: a.n for a in answers if a.status == 202 and a.task_id}

        async def all_mailed() -> bool:
            mailed = {_task_of(m["message_id"]) for m in await _mail(data)}
            return mailed >= accepted.keys()

        await _quietly_until(all_mailed, within=DONE_WITHIN)
        recovered = time.time() - kill.at
        # A job the dead host had mailed but not yet recorded is finished by its re-run once
        # its lease ends (it finds its "sent" mark and mails nothing): wait for the records too.
        unfinished = set(accepted)

        async def all_recorded() -> bool:
            for task in sorted(unfinished):
                if (await _status(http, task))["status"] in FINAL:
                    unfinished.discard(task)
            return not unfinished

        await _quietly_until(all_recorded, within=DONE_WITHIN)
        statuses = {task: await _status(http, task) for task in accepted}
        crons = await _crons_ran(redis)
    assert web.running(), "the web host serves on while a worker host dies"
    assert survivor.running()
    assert victim.pid in kill.pids
    assert not victim.running()

    mail = await _mail(data)
    copies = Counter(_task_of(m["message_id"]) for m in mail)
    first_accepted: dict[str, float] = {}
    for m in mail:
        first_accepted.setdefault(_task_of(m["message_id"]), m["accepted_at"])
    duplicated = {task: n for task, n in copies.items() if n > 1}
    in_window = {
        task for task in duplicated if -KNOWN_WINDOW <= first_accepted[task] - kill.at <= 0.1
    }
    lost = sorted(accepted.keys() - copies.keys())
    victim_lines, survivor_lines = await _job_lines(victim), await _job_lines(survivor)
    in_flight = _unfinished(victim_lines)
    rerun_at = _restarted(in_flight, survivor_lines)
    reruns = sorted(at - kill.at for at in rerun_at.values())
    lease = settings.email_job_timeout + settings.job_lock_margin
    cron_starts = Counter(
        (e["function"], host)
        for host, lines in (("worker1", survivor_lines), ("worker2", victim_lines))
        for e in lines
        if e["event"] == "job_start" and e["job_id"].startswith("cron:")
    )
    refused = Counter(a.status for a in answers if a.status != 202)
    print(
        f"\nseveral hosts (data, web, worker1, worker2, client: network namespaces): "
        f"up in {setup:.1f} s\n"
        f"  cron runs        {[key.rsplit(':', 1)[0] for key in crons]}; "
        f"started: {dict(cron_starts)}\n"
        f"  load             {EMAILS} emails at {RATE}/s, 1 in {SLOW_EVERY} held {HOLD} s by "
        f"the SMTP server; worker2 killed {KILL_AFTER} s in ({len(kill.pids)} processes)\n"
        f"  accepted (202)   {len(accepted)}; other answers {dict(refused)}\n"
        f"  lost             {len(lost)}\n"
        f"  re-run           {len(in_flight)} jobs in flight on worker2, {len(rerun_at)} run "
        f"again on worker1 {reruns[0] if reruns else 0:.1f}-{reruns[-1] if reruns else 0:.1f} s "
        f"after the kill (lease {lease:.0f} s); jobs with 2+ attempts: "
        f"{sum(1 for body in statuses.values() if body['attempts'] > 1)}\n"
        f"  duplicated       {len(duplicated)} emails ({len(in_window)} accepted within "
        f"{KNOWN_WINDOW} s before the kill)\n"
        f"  recovery         {recovered:.1f} s from the kill to every accepted email in\n"
        f"  test             {time.monotonic() - began:.1f} s"
    )
    assert refused == Counter(), "every request is answered 202 while a worker host dies"
    assert lost == []
    assert Counter(body["status"] for body in statuses.values()) == {"SUCCESS": len(accepted)}
    assert in_flight, "the killed host was running no job: nothing was shown"
    assert {job for job, _ in in_flight} <= accepted.keys()
    assert rerun_at.keys() == {job for job, _ in in_flight}, "each ran again on worker1"
    assert reruns[-1] < lease + 10, "a dead host's job waits its lease, not arq's 310 s"
    started_on_victim = {
        (e["job_id"], e["attempt"]): e["at"] for e in victim_lines if e["event"] == "job_start"
    }
    for job, attempt in in_flight:
        outcomes = [entry["outcome"] for entry in statuses[job]["history"]]
        if rerun_at[job] - started_on_victim[job, attempt] < lease - settings.job_lock_margin:
            # killed between its start line and its start's write: its lock was still the
            # claim's (JOB_LOCK_MARGIN), not the attempt's lease, so it ran again sooner, and
            # no attempt of it had been recorded to be marked interrupted
            assert outcomes == ["success"], outcomes
        else:
            assert outcomes == ["interrupted", "success"], outcomes
    assert set(duplicated) == in_window, f"emails sent twice outside the window: {duplicated}"
    assert [key.rsplit(":", 1)[0] for key in crons] == [
        "arq:result:cron:cleanup_old_files",
        "arq:result:cron:daily_report",
    ]
    assert sorted(function for function, _ in cron_starts.elements()) == [
        "cleanup_old_files",
        "daily_report",
    ]
