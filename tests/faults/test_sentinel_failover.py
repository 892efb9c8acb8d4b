"""The master killed under load: Sentinel promotes the replica, the service follows it.

A real master, a replica and three sentinels; ``python -m web`` and ``arq
service.WorkerSettings`` as processes, configured with the sentinels and
REDIS_MIN_REPLICAS_ACK=1. A steady, bounded stream of ``POST /send-email`` runs while the
master gets SIGKILL; once the sentinels have promoted the replica, the dead node comes back as
the new master's replica, as an orchestrator brings a node back (it asks the sentinels for the
master and starts the node as its replica): with REDIS_MIN_REPLICAS_ACK=1 and one replica,
nothing can be confirmed until then. Counted, as scripts/soak.py counts them:

- every request is answered (202, or a quick 503), none hangs;
- every 202 completes: its job ends SUCCESS and its email is received (none lost);
- no email is received twice, except one whose first copy the SMTP server accepted within
  KNOWN_WINDOW before the kill (its "sent" record may not have reached the replica: the one
  duplicate the design cannot rule out, README "Reliability");
- the seconds without service (no 202) are measured and printed.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, Envelope, Session

from settings import Settings
from tests.conftest import AUTH_HEADERS, TEST_API_TOKEN, SmtpRecorder, free_port
from tests.faults.conftest import Spawn
from tests.faults.sentinels import MASTER_NAME, SentinelGroup
from tests.waiting import wait_until

RATE = 25  # requests a second
REQUESTS = 300  # 12 s of load
KILL_AFTER = 3.0  # seconds into the load
NO_HANG = 5.0  # an answer slower than this counts as a hang
FAILOVER = 30  # seconds Sentinel may take to promote the replica on a busy machine
KNOWN_WINDOW = 0.5  # seconds before the kill in which an email may go out twice (above)
STARTUP = 30


@dataclass
class TimedRecorder(SmtpRecorder):
    """The SMTP recorder, also noting when it accepted each message (by Message-ID)."""

    accepted_at: dict[str, list[float]] = field(default_factory=dict)

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        reply = await super().handle_DATA(server, session, envelope)
        message_id = str(self.messages[-1].message["Message-ID"])
        self.accepted_at.setdefault(message_id, []).append(time.time())
        return reply


@dataclass
class Answer:
    n: int
    sent_at: float
    answered_at: float
    status: int  # 0: no answer within NO_HANG
    task_id: str | None = None
    error: str = ""


@pytest.fixture
def smtp_server() -> Iterator[TimedRecorder]:
    recorder = TimedRecorder(port=free_port())
    controller = Controller(recorder, hostname="127.0.0.1", port=recorder.port)
    controller.start()
    try:
        yield recorder
    finally:
        controller.stop()


@pytest.fixture
def settings(tmp_path: Path, smtp_server: TimedRecorder, sentinel_group: SentinelGroup) -> Settings:
    return Settings(
        redis_url="redis://no-such-host.invalid/0",  # the sentinels name the master
        redis_sentinels=sentinel_group.addresses,
        redis_sentinel_master=MASTER_NAME,
        redis_min_replicas_ack=1,
        redis_replica_ack_timeout=300,
        redis_socket_timeout=1,
        redis_retry_seconds=30,  # the worker rides the failover out
        data_dir=tmp_path / "data",
        smtp_host="127.0.0.1",
        smtp_port=smtp_server.port,
        smtp_timeout=5,
        email_job_timeout=30,  # longer than the failover: a job cut mid-way would fail
        job_lock_margin=2,
        retry_backoff_base=0.1,
        retry_backoff_max=1,
        api_tokens=(TEST_API_TOKEN,),
        rate_limit_per_token="",
        rate_limit_per_recipient="",
        web_port=free_port(),
        worker_max_jobs=20,
    )


@pytest.fixture
async def http(settings: Settings) -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(
        f"http://127.0.0.1:{settings.web_port}",
        headers=AUTH_HEADERS,
        timeout=aiohttp.ClientTimeout(total=NO_HANG),
    ) as session:
        yield session


async def _send(http: aiohttp.ClientSession, n: int) -> Answer:
    email = {"to": f"user{n}@example.com", "subject": f"#{n}", "body": "across a failover"}
    sent_at = time.time()
    try:
        async with http.post("/send-email", json=email) as response:
            body = await response.json()
            return Answer(
                n, sent_at, time.time(), response.status, body.get("task_id"), body.get("error", "")
            )
    except (aiohttp.ClientError, TimeoutError) as exc:
        return Answer(n, sent_at, time.time(), 0, error=repr(exc))


async def _load(
    http: aiohttp.ClientSession, group: SentinelGroup
) -> tuple[list[Answer], dict[str, float]]:
    """REQUESTS requests at RATE a second; the master is killed KILL_AFTER seconds in."""
    loop = asyncio.get_running_loop()
    start = loop.time()
    moments: dict[str, float] = {}
    requests = []
    async with group.switch() as switched:
        for n in range(REQUESTS):
            await asyncio.sleep(max(0.0, start + n / RATE - loop.time()))  # pacing, not waiting
            requests.append(asyncio.create_task(_send(http, n)))
            if "kill" not in moments and loop.time() - start >= KILL_AFTER:
                await group.master.stop()  # SIGKILL
                moments["kill"] = time.time()
                rejoin = asyncio.create_task(_promoted_then_rejoin(group, switched, moments))
        answers = await asyncio.gather(*requests)
        await rejoin
    return answers, moments


async def _promoted_then_rejoin(
    group: SentinelGroup, switched: asyncio.Future[int], moments: dict[str, float]
) -> None:
    promoted = await asyncio.wait_for(switched, FAILOVER)
    moments["promoted"] = time.time()
    await group.rejoin_as_replica(group.master, promoted)
    moments["rejoined"] = time.time()


def _without_service(answers: list[Answer], killed_at: float) -> tuple[float, float]:
    """Seconds from the kill to the next 202, and the longest gap between two 202s."""
    accepted = sorted(a.answered_at for a in answers if a.status == 202)
    after = [t for t in accepted if t > killed_at]
    assert after, "no request was accepted after the kill"
    gaps = [later - earlier for earlier, later in itertools.pairwise(accepted)]
    return after[0] - killed_at, max(gaps)


async def test_killing_the_master_under_load_loses_nothing(
    settings: Settings,
    sentinel_group: SentinelGroup,
    smtp_server: TimedRecorder,
    spawn: Spawn,
    http: aiohttp.ClientSession,
) -> None:
    web = await spawn("web")
    worker = await spawn("worker")

    async def healthy() -> bool:
        try:
            async with http.get("/health") as response:
                return response.status == 200 and (await response.json())["worker"]["alive"]
        except aiohttp.ClientError:
            return False

    await wait_until(healthy, within=STARTUP, interval=0.1)
    answers, moments = await _load(http, sentinel_group)
    killed_at = moments["kill"]

    statuses = Counter(a.status for a in answers)
    hangs = [a for a in answers if a.status == 0]
    assert not hangs, f"requests with no answer within {NO_HANG} s: {hangs[:3]}"
    assert set(statuses) <= {202, 503}, statuses
    slowest_503 = max((a.answered_at - a.sent_at for a in answers if a.status == 503), default=0)
    slowest_202 = max(a.answered_at - a.sent_at for a in answers if a.status == 202)
    assert slowest_503 < 2, f"a 503 took {slowest_503:.1f} s"
    accepted = {a.task_id: a.n for a in answers if a.status == 202}

    async def all_done() -> bool:
        return len({m.recipients[0] for m in smtp_server.messages}) >= len(accepted)

    await wait_until(all_done, within=60, interval=0.1)
    states: Counter[str] = Counter()
    for task_id in accepted:
        async with http.get(f"/task-status/{task_id}") as response:
            states[(await response.json())["status"]] += 1
    received = Counter(m.recipients[0] for m in smtp_server.messages)
    lost = [n for n in accepted.values() if received[f"user{n}@example.com"] == 0]
    copies = {mid: times for mid, times in smtp_server.accepted_at.items() if len(times) > 1}
    in_window = {
        mid: times[0] - killed_at
        for mid, times in copies.items()
        if -KNOWN_WINDOW <= times[0] - killed_at <= 0
    }
    to_first_202, longest_gap = _without_service(answers, killed_at)
    refused_unconfirmed = sum("replicas did not confirm" in a.error for a in answers)
    print(
        f"\nsentinel failover under load: {len(answers)} requests at {RATE}/s, master killed "
        f"{KILL_AFTER:.0f} s in; replica promoted after {moments['promoted'] - killed_at:.2f} s, "
        f"old master back as its replica after {moments['rejoined'] - killed_at:.2f} s\n"
        f"  accepted (202)   {statuses[202]}; slowest {slowest_202:.2f} s\n"
        f"  refused (503)    {statuses[503]} ({refused_unconfirmed} not confirmed by a replica, "
        f"{statuses[503] - refused_unconfirmed} Redis unreachable); slowest {slowest_503:.2f} s\n"
        f"  completed        {states['SUCCESS']} SUCCESS, {len(accepted) - len(lost)} emails in\n"
        f"  lost             {len(lost)}\n"
        f"  duplicated       {sum(len(t) - 1 for t in copies.values())} "
        f"({len(in_window)} within {KNOWN_WINDOW} s before the kill: {in_window})\n"
        f"  without service  {to_first_202:.2f} s from the kill to the next 202 "
        f"(longest gap between two 202s: {longest_gap:.2f} s)"
    )
    assert states["SUCCESS"] == len(accepted), states
    assert lost == []
    assert set(copies) == set(in_window), f"emails sent twice outside the window: {copies}"
    assert worker.running(), "the worker rode the failover out"
    assert web.running()
