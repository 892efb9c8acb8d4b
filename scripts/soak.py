"""``make soak``: the whole service under load while its worker is killed at random.

For ``--minutes`` (default 2) this enqueues a steady mix of jobs through the HTTP API (emails,
registrations with their welcome email, webhooks, events, image uploads) against real
processes: a private ``redis-server`` (AOF, fsync every second), ``python -m web`` and
``arq service.WorkerSettings`` (``--workers`` of them), with an SMTP sink and a webhook
receiver in this process. Every few seconds (random, ``--kill-every`` on average) one worker
gets SIGKILL and a fresh one is started. Then it stops enqueueing, lets the queue drain, and
prints what it saw::

    accepted, completed, failed, lost (must be 0), duplicated side effects (must be 0)

A job is *lost* when it was accepted (202/201) and never finished, or finished SUCCESS without
its side effect (no email, no webhook delivery). A *duplicated side effect* is an email that
arrived twice (same Message-ID), a user welcomed twice, or a webhook payload acted on twice by
a receiver that honours ``Idempotency-Key`` (a repeated delivery with the same key is counted,
shown, and not acted on again). Exit status 1 when lost or duplicated is not 0.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from email import message_from_bytes
from email.policy import default as default_policy
from pathlib import Path

import aiohttp
from aiohttp import web
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, Envelope, Session
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
TOKEN = "soak-token-0123456789abcdef"  # noqa: S105 (a throw-away token for a private run)
FINAL = {"SUCCESS", "FAILURE", "CANCELLED"}
# weights of each kind of request in the mix
MIX = {"email": 50, "register": 10, "webhook": 20, "event": 15, "upload": 5}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass
class MailSink:
    """aiosmtpd handler counting messages by Message-ID and by recipient."""

    by_message_id: Counter[str] = field(default_factory=Counter)
    by_recipient: Counter[str] = field(default_factory=Counter)
    accepted_at: defaultdict[str, list[float]] = field(default_factory=lambda: defaultdict(list))
    lock: threading.Lock = field(default_factory=threading.Lock)

    latency: float = 0.0  # a real server takes a while to accept: kills land mid-email
    commit_early: bool = False  # keep the message once its data is in, like Postfix

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        # By default the message is kept only when the reply is due: a client killed before
        # that cancels this handler (aiosmtpd does so on connection loss). With commit_early
        # it is kept as soon as the data is in, as an MTA that queues first and replies after.
        if self.commit_early:
            self._keep(envelope)
        await asyncio.sleep(random.uniform(0, 2 * self.latency))
        if not self.commit_early:
            self._keep(envelope)
        return "250 OK"

    def _keep(self, envelope: Envelope) -> None:
        message = message_from_bytes(envelope.original_content or b"", policy=default_policy)
        with self.lock:
            self.accepted_at[str(message["Message-ID"])].append(time.time())
            self.by_message_id[str(message["Message-ID"])] += 1
            for recipient in envelope.rcpt_tos:
                self.by_recipient[recipient.lower()] += 1


@dataclass
class HookReceiver:
    """A webhook receiver that acts once per Idempotency-Key and counts repeated deliveries."""

    deliveries: Counter[str] = field(default_factory=Counter)
    acted_on: Counter[str] = field(default_factory=Counter)

    latency: float = 0.0

    async def handle(self, request: web.Request) -> web.Response:
        key = request.headers.get("Idempotency-Key", "")
        await request.read()
        await asyncio.sleep(random.uniform(0, 2 * self.latency))
        self.deliveries[key] += 1
        if self.deliveries[key] == 1:  # a receiver that honours the key acts on the first only
            self.acted_on[key] += 1
        return web.json_response({"ok": True})


@dataclass
class Accepted:
    kind: str
    task_id: str
    detail: str = ""  # the recipient of an email or a registration


class Service:
    """The child processes (Redis, web, workers), each killed by its own pid at the end."""

    def __init__(self, folder: Path, env: dict[str, str], redis_port: int) -> None:
        self.folder = folder
        self.env = env
        self.redis_port = redis_port
        self.workers: list[subprocess.Popen[bytes]] = []
        self.others: list[subprocess.Popen[bytes]] = []
        self.kills = 0
        self.killed_at: list[float] = []
        self.started = 0

    def _spawn(self, name: str, argv: list[str]) -> subprocess.Popen[bytes]:
        log = (self.folder / f"{name}.log").open("ab")
        try:
            return subprocess.Popen(  # noqa: S603 (our own commands, no shell)
                argv, cwd=ROOT, env=self.env, stdout=log, stderr=log
            )
        finally:
            log.close()

    def start_redis(self) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            sys.exit("soak: redis-server is not installed (apt-get install redis-server)")
        argv = [
            binary,
            "--port", str(self.redis_port),
            "--bind", "127.0.0.1",
            "--dir", str(self.folder),
            "--save", "",
            "--appendonly", "yes",
            # as in production: this run kills workers, not Redis (tests/faults kill Redis,
            # with fsync always); fsync per write would also stretch every job's Redis calls
            "--appendfsync", "everysec",
        ]  # fmt: skip
        self.others.append(self._spawn("redis", argv))

    def start_web(self) -> None:
        self.others.append(self._spawn("web", [sys.executable, "-m", "web"]))

    def start_worker(self) -> None:
        self.started += 1
        argv = [sys.executable, "-m", "arq", "service.WorkerSettings"]
        self.workers.append(self._spawn(f"worker{self.started}", argv))

    def kill_a_worker(self, rng: random.Random) -> None:
        alive = [w for w in self.workers if w.poll() is None]
        if alive:
            victim = rng.choice(alive)
            self.killed_at.append(time.time())
            victim.send_signal(signal.SIGKILL)
            victim.wait()
            self.kills += 1

    def keep_workers(self, count: int) -> None:
        """Start workers until ``count`` are alive (a worker may also exit on its own)."""
        while sum(w.poll() is None for w in self.workers) < count:
            self.start_worker()

    def stop(self) -> None:
        for process in [*self.workers, *self.others]:
            if process.poll() is None:
                process.send_signal(signal.SIGKILL)
                process.wait()


def image_upload() -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (1200, 900), (30, 120, 200)).save(out, format="JPEG")
    return out.getvalue()


async def enqueue_one(
    http: aiohttp.ClientSession, kind: str, n: int, hook_url: str, image: bytes
) -> Accepted | None:
    """Send one request of ``kind``; the accepted job, or None when the API refused it."""
    detail = ""
    if kind == "email":
        detail = f"user{n}@example.com"
        request = http.post("/send-email", json={"to": detail, "subject": f"#{n}", "body": "x"})
    elif kind == "register":
        detail = f"new{n}@example.com"
        request = http.post("/register", json={"name": f"User {n}", "email": detail})
    elif kind == "webhook":
        request = http.post("/webhooks", json={"url": hook_url, "payload": {"n": n}})
    elif kind == "event":
        request = http.post("/events", json={"event": {"n": n}})
    else:
        form = aiohttp.FormData()
        form.add_field("file", image, filename="photo.jpg", content_type="image/jpeg")
        request = http.post("/upload", data=form)
    async with request as response:
        body = await response.json()
        if response.status not in (201, 202):
            print(f"soak: {kind} refused with {response.status}: {body}", file=sys.stderr)
            return None
        return Accepted(kind, body["task_id"], detail)


async def statuses(http: aiohttp.ClientSession, jobs: list[Accepted]) -> dict[str, tuple[str, int]]:
    """Each job's status and attempts (("MISSING", 0) for a 404), a few requests at a time."""
    found: dict[str, tuple[str, int]] = {}
    gate = asyncio.Semaphore(20)

    async def one(job: Accepted) -> None:
        async with gate, http.get(f"/task-status/{job.task_id}") as response:
            if response.status == 404:
                found[job.task_id] = ("MISSING", 0)
            else:
                body = await response.json()
                found[job.task_id] = (str(body["status"]), int(body.get("attempts") or 0))

    await asyncio.gather(*(one(job) for job in jobs))
    return found


async def wait_for(url: str, within: float) -> None:
    deadline = time.monotonic() + within
    async with aiohttp.ClientSession() as probe:
        while True:
            try:
                async with probe.get(url) as response:
                    if response.status == 200:
                        return
            except aiohttp.ClientError:
                pass
            if time.monotonic() > deadline:
                sys.exit(f"soak: {url} did not answer within {within} s")
            await asyncio.sleep(0.1)


@contextmanager
def mail_sink(port: int) -> Iterator[MailSink]:
    sink = MailSink()
    controller = Controller(sink, hostname="127.0.0.1", port=port)
    controller.start()
    try:
        yield sink
    finally:
        controller.stop()


def service_env(folder: Path, ports: dict[str, int], args: argparse.Namespace) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        REDIS_URL=f"redis://127.0.0.1:{ports['redis']}/0",
        DATA_DIR=str(folder / "data"),
        SMTP_HOST="127.0.0.1",
        SMTP_PORT=str(ports["smtp"]),
        SMTP_TIMEOUT="5",
        WEB_HOST="127.0.0.1",
        WEB_PORT=str(ports["web"]),
        API_TOKENS=TOKEN,
        WEBHOOK_ALLOWED_HOSTS="127.0.0.1",
        RATE_LIMIT_PER_TOKEN="1000000/minute",  # noqa: S106 (a rate, not a secret)
        RATE_LIMIT_PER_RECIPIENT="1000000/hour",
        # short limits, so a killed worker's jobs come back within seconds
        EMAIL_JOB_TIMEOUT="10",
        WEBHOOK_TIMEOUT="3",
        WEBHOOK_JOB_TIMEOUT="6",
        IMAGE_JOB_TIMEOUT="20",
        JOB_LOCK_MARGIN="2",
        JOB_MAX_TRIES=str(args.max_tries),
        RETRY_BACKOFF_BASE="0.2",
        RETRY_BACKOFF_MAX="2",
        WORKER_MAX_JOBS="20",
        PYTHONUNBUFFERED="1",
    )
    return env


def effect_seen(job: Accepted, sink: MailSink, hooks: HookReceiver) -> bool:
    """Whether the job's side effect reached its receiver (jobs without one: always)."""
    if job.kind in ("email", "register"):
        return sink.by_recipient[job.detail] > 0
    if job.kind == "webhook":
        return hooks.acted_on[job.task_id] > 0
    return True


def report(
    jobs: list[Accepted],
    found: dict[str, tuple[str, int]],
    sink: MailSink,
    hooks: HookReceiver,
    service: Service,
    seconds: float,
) -> int:
    """Print the figures; the exit status (1 if anything was lost or done twice)."""
    final = {task_id: state for task_id, (state, _) in found.items()}
    rerun = sum(attempts > 1 for _, attempts in found.values())
    by_state = Counter(final.values())
    completed, failed = by_state["SUCCESS"], by_state["FAILURE"] + by_state["CANCELLED"]
    unfinished = [j for j in jobs if final.get(j.task_id) not in FINAL]
    no_effect = [
        job
        for job in jobs
        if final.get(job.task_id) == "SUCCESS" and not effect_seen(job, sink, hooks)
    ]
    email_dups = sum(count - 1 for count in sink.by_message_id.values() if count > 1)
    welcome_dups = sum(
        sink.by_recipient[j.detail] - 1
        for j in jobs
        if j.kind == "register" and sink.by_recipient[j.detail] > 1
    )
    acted_twice = sum(count - 1 for count in hooks.acted_on.values() if count > 1)
    redelivered = sum(count - 1 for count in hooks.deliveries.values() if count > 1)
    lost = len(unfinished) + len(no_effect)
    duplicated = email_dups + welcome_dups + acted_twice
    kinds = Counter(job.kind for job in jobs)
    print(f"soak: {seconds:.0f} s, {service.kills} worker kills, {service.started} worker starts")
    print(f"  accepted   {len(jobs)}  ({', '.join(f'{k} {v}' for k, v in sorted(kinds.items()))})")
    print(f"  completed  {completed}  ({rerun} of them needed more than one attempt)")
    print(f"  failed     {failed}")
    print(f"  lost       {lost}  (unfinished {len(unfinished)}, success without effect "
          f"{len(no_effect)})")  # fmt: skip
    print(f"  duplicated {duplicated}  (emails {email_dups}, welcome emails {welcome_dups}, "
          f"webhooks acted on twice {acted_twice})")  # fmt: skip
    print(f"  webhook deliveries repeated with the same Idempotency-Key (dropped by the "
          f"receiver): {redelivered}")  # fmt: skip
    for message_id, times in sink.accepted_at.items():
        if len(times) > 1:
            gaps = [k - times[0] for k in service.killed_at]
            nearest = min(gaps, key=abs) if gaps else None
            when = "no kill" if nearest is None else f"{nearest * 1000:+.0f} ms"
            print(f"  email received {len(times)} times: {message_id}; nearest worker kill "
                  f"{when} from the server's first acceptance")  # fmt: skip
    for job in (unfinished + no_effect)[:10]:
        print(f"  lost: {job.kind} {job.task_id} status {final.get(job.task_id)}")
    return 1 if lost or duplicated else 0


async def soak(args: argparse.Namespace) -> int:
    rng = random.Random(args.seed)
    folder = Path(tempfile.mkdtemp(prefix="soak-"))
    ports = {"redis": free_port(), "smtp": free_port(), "web": free_port()}
    service = Service(folder, service_env(folder, ports, args), ports["redis"])
    hooks = HookReceiver()
    hook_app = web.Application()
    hook_app.router.add_post("/hook", hooks.handle)
    runner = web.AppRunner(hook_app, access_log=None)
    await runner.setup()
    hook_port = free_port()
    await web.TCPSite(runner, "127.0.0.1", hook_port).start()
    hook_url = f"http://127.0.0.1:{hook_port}/hook"
    base = f"http://127.0.0.1:{ports['web']}"
    print(
        f"soak: {args.minutes} min, {args.rate} jobs/s, {args.workers} worker(s), logs in {folder}"
    )
    try:
        with mail_sink(ports["smtp"]) as sink:
            sink.latency = args.latency
            sink.commit_early = args.commit_early
            hooks.latency = args.latency
            service.start_redis()
            service.start_web()
            service.keep_workers(args.workers)
            await wait_for(f"{base}/health", within=60)
            headers = {"Authorization": f"Bearer {TOKEN}"}
            timeout = aiohttp.ClientTimeout(total=30)
            async with aiohttp.ClientSession(base, headers=headers, timeout=timeout) as http:
                jobs = await load(http, service, rng, args, hook_url)
                final = await drain(http, service, jobs, args)
            seconds = args.minutes * 60
            return report(jobs, final, sink, hooks, service, seconds)
    finally:
        service.stop()
        await runner.cleanup()


async def load(http: aiohttp.ClientSession, service: Service, rng: random.Random,
               args: argparse.Namespace, hook_url: str) -> list[Accepted]:  # fmt: skip
    """Enqueue at ``args.rate`` per second for the run's length, killing workers meanwhile."""
    jobs: list[Accepted] = []
    image = image_upload()
    kinds, weights = list(MIX), list(MIX.values())
    pending: set[asyncio.Task[None]] = set()

    async def send(kind: str, n: int) -> None:
        try:
            accepted = await enqueue_one(http, kind, n, hook_url, image)
        except (aiohttp.ClientError, TimeoutError) as exc:
            print(f"soak: {kind} request failed: {exc!r}", file=sys.stderr)
            return
        if accepted is not None:
            jobs.append(accepted)

    start = time.monotonic()
    end = start + args.minutes * 60
    n = 0
    killer = asyncio.create_task(kill_at_random(service, rng, args))
    while time.monotonic() < end:
        n += 1
        kind = rng.choices(kinds, weights)[0]
        task = asyncio.create_task(send(kind, n))
        pending.add(task)
        task.add_done_callback(pending.discard)
        await asyncio.sleep(max(0.0, start + n / args.rate - time.monotonic()))
    killer.cancel()
    await asyncio.gather(*pending)
    return jobs


async def kill_at_random(service: Service, rng: random.Random, args: argparse.Namespace) -> None:
    """SIGKILL a worker every ``--kill-every`` seconds on average, at moments unrelated to
    the enqueue rhythm, and start a fresh one at once."""
    while True:
        await asyncio.sleep(rng.uniform(0.5, 1.5) * args.kill_every)
        service.kill_a_worker(rng)
        service.keep_workers(args.workers)


async def drain(http: aiohttp.ClientSession, service: Service, jobs: list[Accepted],
                args: argparse.Namespace) -> dict[str, tuple[str, int]]:  # fmt: skip
    """Keep the workers up until every accepted job is final or ``--drain`` seconds pass."""
    deadline = time.monotonic() + args.drain
    while True:
        service.keep_workers(args.workers)
        final = await statuses(http, jobs)
        open_jobs = sum(state not in FINAL for state, _ in final.values())
        if open_jobs == 0 or time.monotonic() > deadline:
            return final
        print(f"soak: draining, {open_jobs} jobs not finished yet")
        await asyncio.sleep(2)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=2.0)
    parser.add_argument("--rate", type=float, default=10.0, help="requests per second")
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--kill-every", type=float, default=6.0, help="seconds, on average")
    parser.add_argument("--max-tries", type=int, default=10)
    parser.add_argument("--drain", type=float, default=120.0, help="seconds to wait at the end")
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument(
        "--commit-early",
        action="store_true",
        help="the SMTP sink keeps a message once its data is in, before replying (like Postfix)",
    )
    parser.add_argument(
        "--latency", type=float, default=0.15, help="mean seconds the SMTP sink and webhook take"
    )
    args = parser.parse_args()
    sys.exit(asyncio.run(soak(args)))


if __name__ == "__main__":
    main()
