"""The users database, one suite for both backends: SQLite and PostgreSQL.

Every test that takes ``database_url`` (or ``outage``) runs once per backend: SQLite in a
file under the test's folder, PostgreSQL in a database of the test's own on the shared
server (tests/postgres.py: created for the test, dropped after it, passed or failed). The
outage tests stop a private PostgreSQL cluster (or, for SQLite, hold the file's write lock
past DATABASE_TIMEOUT), never the shared server.
"""

from __future__ import annotations

import asyncio
import json
import sys
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import aiosqlite
import asyncpg
import pytest
from aiohttp.test_utils import TestClient
from arq.connections import ArqRedis

from service.engine.loop import BatchWorker as Worker
from service.queue.enqueue import enqueue
from service.store.database import (
    Database,
    DatabaseOpenError,
    EmailTakenError,
    open_database,
)
from service.store.database.migrations import ADOPTED, MIGRATIONS, Migration
from service.store.database.postgres import MIGRATION_LOCK
from service.worker.options import worker_options
from settings import Settings, SettingsError, load_settings
from tests.conftest import (
    AUTH_HEADERS,
    ClientFactory,
    RunWorker,
    SmtpRecorder,
    free_port,
    queued,
    status_of,
)
from tests.days import RECENT_DAY
from tests.postgres import ClusterFolder, PostgresCluster, scratch_database, with_database
from tests.test_worker_process import ROOT, service_env
from tests.waiting import wait_until
from web import create_app

BACKENDS = ["sqlite", "postgresql"]
WIDE = (datetime(2000, 1, 1, tzinfo=UTC), datetime(2100, 1, 1, tzinfo=UTC))  # every user
# loaded here, off the event loop (a zone's first use reads its file); cached by zoneinfo
NEW_YORK, AUCKLAND = ZoneInfo("America/New_York"), ZoneInfo("Pacific/Auckland")


# ---------------------------------------------------------------- fixtures and helpers


@pytest.fixture(params=BACKENDS)
async def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[str]:
    """A new, empty database of each backend."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path}/db/app.db"
        return
    async with scratch_database() as url:
        yield url


@pytest.fixture
def db_settings(settings: Settings, database_url: str) -> Settings:
    return settings.model_copy(update={"database_url": database_url})


@pytest.fixture
async def db(db_settings: Settings) -> AsyncIterator[Database]:
    database = await open_database(db_settings)
    yield database
    await database.close()


@pytest.fixture
async def db_client(
    aiohttp_client: ClientFactory, db_settings: Settings, redis: ArqRedis
) -> TestClient[Any, Any]:
    return await aiohttp_client(create_app(db_settings), headers=AUTH_HEADERS)


def backend_of(url: str) -> str:
    return "sqlite" if url.startswith("sqlite:") else "postgresql"


async def query(url: str, statement: str, *args: Any) -> list[tuple[Any, ...]]:
    """Run one statement with the backend's own driver, past the Database interface: what
    the tests look at (or set up) directly. ``?`` marks parameters on both backends."""
    if backend_of(url) == "sqlite":
        path = url.removeprefix("sqlite:///")
        async with (
            aiosqlite.connect(path, isolation_level=None) as sqlite,
            sqlite.execute(statement, args) as cursor,
        ):
            return [tuple(row) for row in await cursor.fetchall()]
    for number in range(1, len(args) + 1):
        statement = statement.replace("?", f"${number}", 1)
    postgres = await asyncpg.connect(url)
    try:
        return [tuple(row) for row in await postgres.fetch(statement, *args)]
    finally:
        await postgres.close()


async def versions(url: str) -> list[tuple[int, str]]:
    rows = await query(url, "SELECT version, name FROM schema_version ORDER BY version")
    return [(int(version), str(name)) for version, name in rows]


async def backdate(url: str, user_id: int, when: datetime) -> None:
    """Set a user's registration time, in each backend's own storage format."""
    stored: Any = when.astimezone(UTC).isoformat() if backend_of(url) == "sqlite" else when
    await query(url, "UPDATE users SET created_at = ? WHERE id = ?", stored, user_id)


def with_version_2(sql: tuple[str, ...]) -> tuple[Migration, ...]:
    return (*MIGRATIONS, Migration(2, "test step", sql))


# ---------------------------------------------------------------- migrations


async def test_a_new_database_gets_every_version_once(
    db_settings: Settings, database_url: str
) -> None:
    first = await open_database(db_settings)
    user = await first.create_user("Ann", "ann@example.com")
    await first.close()
    assert await versions(database_url) == [(1, "users")]

    again = await open_database(db_settings)  # a restart: nothing to apply
    try:
        assert await again.get_user(user.id) == user
    finally:
        await again.close()
    assert await versions(database_url) == [(1, "users")]


# The schema every SQLite file was made with before there were versions, verbatim.
OLD_SQLITE_SCHEMA = """
CREATE TABLE IF NOT EXISTS users (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    name TEXT NOT NULL,
    email TEXT NOT NULL UNIQUE,
    created_at TEXT NOT NULL,
    welcome_sent_at TEXT
);
CREATE INDEX IF NOT EXISTS users_created_at ON users (created_at);
"""


async def test_an_sqlite_file_from_before_versions_is_adopted_as_version_1(
    settings: Settings, tmp_path: Path
) -> None:
    path = tmp_path / "old" / "app.db"
    await asyncio.to_thread(path.parent.mkdir)
    async with aiosqlite.connect(path) as old:  # as the old code made and wrote it
        await old.execute("PRAGMA journal_mode=WAL")
        await old.executescript(OLD_SQLITE_SCHEMA)
        await old.execute(
            "INSERT INTO users (name, email, created_at, welcome_sent_at) VALUES (?, ?, ?, ?)",
            ("Old Timer", "old@example.com", "2026-11-20T10:00:00.123456+00:00", None),
        )
        await old.commit()
    url = f"sqlite:///{path}"

    db = await open_database(settings.model_copy(update={"database_url": url}))
    try:
        assert await versions(url) == [(1, ADOPTED)]
        user = await db.get_user(1)
        assert user is not None
        assert (user.name, user.email) == ("Old Timer", "old@example.com")
        assert user.created_at == datetime(2026, 11, 20, 10, 0, 0, 123456, tzinfo=UTC)
        with pytest.raises(EmailTakenError):
            await db.create_user("Impostor", "OLD@example.com")
        new = await db.create_user("New", "new@example.com")
        assert new.id == 2
        day = datetime(2026, 11, 20, tzinfo=UTC)
        assert await db.count_registered(day, day + timedelta(days=1)) == 1
        await db.mark_welcome_sent(1)
        assert (await db.get_user(1) or user).welcome_sent_at is not None
    finally:
        await db.close()


async def test_an_upgrade_applies_the_missing_versions_only(
    db_settings: Settings, database_url: str
) -> None:
    db = await open_database(db_settings)
    user = await db.create_user("Ann", "ann@example.com")
    await db.close()

    steps = with_version_2(("ALTER TABLE users ADD COLUMN nickname TEXT",))
    upgraded = await open_database(db_settings, steps)
    try:
        assert await upgraded.get_user(user.id) == user
    finally:
        await upgraded.close()
    assert await versions(database_url) == [(1, "users"), (2, "test step")]
    assert await query(database_url, "SELECT nickname FROM users") == [(None,)]


async def test_a_failing_step_leaves_the_database_at_the_version_before(
    db_settings: Settings, database_url: str
) -> None:
    await (await open_database(db_settings)).close()
    broken = with_version_2(("CREATE TABLE half_done (x INTEGER)", "THIS IS NOT SQL"))

    with pytest.raises(DatabaseOpenError, match="DATABASE_URL="):
        await open_database(db_settings, broken)

    assert await versions(database_url) == [(1, "users")]
    tables = await query(
        database_url,
        "SELECT name FROM sqlite_master WHERE name = 'half_done'"
        if backend_of(database_url) == "sqlite"
        else "SELECT tablename FROM pg_tables WHERE tablename = 'half_done'",
    )
    assert tables == []  # the step's first statement was rolled back with it


async def test_a_schema_newer_than_the_code_stops_the_start(
    db_settings: Settings, database_url: str
) -> None:
    await (await open_database(db_settings, with_version_2(("SELECT 1",)))).close()

    with pytest.raises(DatabaseOpenError, match="version 2, newer than this code's 1"):
        await open_database(db_settings)


@dataclass
class MigrationLock:
    """The test takes the migration lock itself, as a migrating process would hold it."""

    url: str
    release: Callable[[], Awaitable[None]]
    waiting: Callable[[], Awaitable[int]]  # how many sessions wait on it, where visible


async def _hold_migration_lock(url: str) -> MigrationLock:
    if backend_of(url) == "sqlite":
        path = Path(url.removeprefix("sqlite:///"))
        await asyncio.to_thread(path.parent.mkdir, parents=True, exist_ok=True)
        holder = await aiosqlite.connect(path, isolation_level=None)
        await holder.execute("PRAGMA journal_mode=WAL")
        await holder.execute("BEGIN IMMEDIATE")

        async def release_sqlite() -> None:
            await holder.execute("ROLLBACK")
            await holder.close()

        async def unknown() -> int:
            return -1  # SQLite shows no lock waits

        return MigrationLock(url, release_sqlite, unknown)

    connection = await asyncpg.connect(url)
    transaction = connection.transaction()
    await transaction.start()
    await connection.execute("SELECT pg_advisory_xact_lock($1)", MIGRATION_LOCK)

    async def release_postgres() -> None:
        await transaction.rollback()
        await connection.close()

    async def waiters() -> int:
        count = await connection.fetchval(
            "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted"
            " AND database = (SELECT oid FROM pg_database WHERE datname = current_database())"
        )
        return int(count)

    return MigrationLock(url, release_postgres, waiters)


@pytest.mark.parametrize("upgrade", [False, True], ids=["new", "upgrade"])
async def test_two_openers_migrating_at_once_take_turns(
    db_settings: Settings, database_url: str, upgrade: bool
) -> None:
    """Both openers wait on the lock, are let go at the same instant, race, and both start:
    one applies what is missing, the other finds it applied. Without the lock, on a new
    database the second fails creating what the first is creating; on an upgrade, it read
    the versions before the first wrote them and fails (or applies them twice)."""
    steps: tuple[Migration, ...] = MIGRATIONS
    if upgrade:
        await (await open_database(db_settings)).close()
        steps = with_version_2(("ALTER TABLE users ADD COLUMN nickname TEXT",))
    lock = await _hold_migration_lock(database_url)
    patient = db_settings.model_copy(update={"database_timeout": 20.0})
    openers = [asyncio.create_task(open_database(patient, steps)) for _ in range(2)]
    try:
        if backend_of(database_url) == "postgresql":

            async def both_wait() -> bool:
                return await lock.waiting() == 2

            await wait_until(both_wait)
        done, _ = await asyncio.wait(openers, timeout=0.5)
        assert done == set(), "an opener went on while another held the migration lock"
    finally:
        await lock.release()
    opened = await asyncio.gather(*openers)
    try:
        user = await opened[0].create_user("Ann", "ann@example.com")
        assert await opened[1].get_user(user.id) == user
    finally:
        for database in opened:
            await database.close()
    expected = [(1, "users"), (2, "test step")] if upgrade else [(1, "users")]
    assert await versions(database_url) == expected


# Each racer opens the database when told to; the runner logs what it applied.
RACER = """
import asyncio, logging, sys
from service.store.database import open_database
from settings import load_settings

logging.basicConfig(stream=sys.stdout, level=logging.INFO, format="%(message)s")
settings = load_settings()
print("ready", flush=True)
sys.stdin.readline()

async def open_and_close():
    database = await open_database(settings)
    await database.close()

asyncio.run(open_and_close())
"""
RACERS = 4


async def test_processes_opening_a_new_database_at_once_all_start(
    db_settings: Settings, database_url: str
) -> None:
    env = service_env(db_settings, DATABASE_URL=database_url)
    racers = [
        await asyncio.create_subprocess_exec(
            sys.executable,
            "-c",
            RACER,
            cwd=ROOT,
            env=env,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )
        for _ in range(RACERS)
    ]
    try:
        for racer in racers:  # every one imported and waiting: the start is one instant
            assert racer.stdout is not None
            assert await asyncio.wait_for(racer.stdout.readline(), 30) == b"ready\n"
        for racer in racers:
            assert racer.stdin is not None
            racer.stdin.write(b"go\n")
        await asyncio.gather(*(racer.stdin.drain() for racer in racers if racer.stdin))
        outputs = [
            (await asyncio.wait_for(racer.communicate(), 30))[0].decode() for racer in racers
        ]
    finally:
        for racer in racers:
            if racer.returncode is None:
                racer.kill()
                await racer.wait()
    assert [racer.returncode for racer in racers] == [0] * RACERS, outputs
    appliers = [out for out in outputs if "applied versions [1]" in out]
    assert len(appliers) == 1, outputs
    assert await versions(database_url) == [(1, "users")]


# ---------------------------------------------------------------- the users table


async def test_a_user_reads_back_as_written_and_is_welcomed_once(db: Database) -> None:
    user = await db.create_user("Ann Lee", "Ann@Example.com")
    assert user.email == "ann@example.com"
    assert user.created_at.utcoffset() == timedelta(0)
    assert abs(datetime.now(UTC) - user.created_at) < timedelta(minutes=1)
    assert await db.get_user(user.id) == user
    assert await db.get_user(user.id + 1000) is None

    await db.mark_welcome_sent(user.id)
    welcomed = await db.get_user(user.id)
    assert welcomed is not None
    assert welcomed.welcome_sent_at is not None
    await db.mark_welcome_sent(user.id)  # a re-run keeps the first time
    assert await db.get_user(user.id) == welcomed

    await db.delete_user(user.id)
    assert await db.get_user(user.id) is None


@pytest.mark.parametrize("pool_size", [1, 3])
async def test_a_process_holds_at_most_database_pool_size_postgresql_connections(
    settings: Settings, pool_size: int
) -> None:
    """Many sign-ups at once share DATABASE_POOL_SIZE connections: the pool opens that many
    (it keeps idle ones for minutes), never more, and the rest wait their turn."""
    async with scratch_database() as url:
        database = await open_database(
            settings.model_copy(update={"database_url": url, "database_pool_size": pool_size})
        )
        try:
            await asyncio.gather(
                *(database.create_user(f"User {n}", f"user{n}@example.com") for n in range(30))
            )
            [(connections,)] = await query(
                url,
                "SELECT count(*) FROM pg_stat_activity"
                " WHERE datname = current_database() AND pid <> pg_backend_pid()",
            )
            assert await database.count_registered(*WIDE) == 30
        finally:
            await database.close()
    assert connections == pool_size


@pytest.mark.parametrize(
    ("first", "second"),
    [
        ("Ann.Lee@Example.com", "ann.lee@EXAMPLE.COM"),
        ("ÉMILE@exemple.fr", "émile@exemple.fr"),  # beyond ASCII, as SQLite's lower() is not
    ],
)
async def test_one_user_per_address_whatever_its_case(
    db: Database, first: str, second: str
) -> None:
    user = await db.create_user("First", first)
    assert user.email == first.lower()
    with pytest.raises(EmailTakenError):
        await db.create_user("Second", second)
    assert await db.count_registered(*WIDE) == 1
    assert (await db.create_user("Other", "other@example.com")).id != user.id


async def test_count_registered_is_one_day_of_cron_timezone_across_a_dst_change(
    db: Database, database_url: str
) -> None:
    """2024-03-10 in New York is 23 hours long (clocks go forward at 02:00) and runs from
    05:00 UTC that day to 04:00 UTC the next: a count by UTC dates, or of 24 hours from
    midnight, gets it wrong."""
    tz = NEW_YORK
    registered = {
        "the evening before, 23:30 EST (already the 10th in UTC)": datetime(2024, 3, 10, 4, 30),
        "midnight, 00:00 EST": datetime(2024, 3, 10, 5, 0),
        "23:00 EDT (the 11th in UTC)": datetime(2024, 3, 11, 3, 0),
        "the last microsecond, 23:59:59.999999 EDT": datetime(2024, 3, 11, 3, 59, 59, 999999),
        "the next midnight, 00:00 EDT": datetime(2024, 3, 11, 4, 0),
    }
    for n, when in enumerate(registered.values()):
        user = await db.create_user(f"User {n}", f"user{n}@example.com")
        await backdate(database_url, user.id, when.replace(tzinfo=UTC))

    day = date(2024, 3, 10)
    start = datetime.combine(day, time.min, tzinfo=tz)  # as jobs/reports.py asks
    assert await db.count_registered(start, start + timedelta(days=1)) == 3
    utc_day = datetime.combine(day, time.min, tzinfo=UTC)
    assert await db.count_registered(utc_day, utc_day + timedelta(days=1)) == 2


# ---------------------------------------------------------------- through the API and jobs


async def test_registering_an_address_twice_is_409_and_changes_nothing(
    db_client: TestClient[Any, Any], db: Database, redis: ArqRedis, db_settings: Settings
) -> None:
    first = await db_client.post("/register", json={"name": "Cy", "email": "cy@example.com"})
    assert first.status == 201
    again = await db_client.post("/register", json={"name": "Cy 2", "email": "CY@Example.com"})
    assert again.status == 409
    assert "already registered" in (await again.json())["error"]
    assert len(await queued(redis, db_settings)) == 1
    assert await db.count_registered(*WIDE) == 1


async def test_a_sign_up_whose_welcome_cannot_be_queued_is_undone(
    aiohttp_client: ClientFactory,
    db_settings: Settings,
    db: Database,
    private_redis: tuple[str, Any],
) -> None:
    """Redis gone between the insert and the enqueue: 503, and the row is deleted again
    (the next user's id shows the row was there). No rate limits, so that the insert is
    reached: they would refuse first, on Redis."""
    url, process = private_redis
    own = db_settings.model_copy(
        update={"redis_url": url, "rate_limit_per_token": "", "rate_limit_per_recipient": ""}
    )
    client = await aiohttp_client(create_app(own), headers=AUTH_HEADERS)
    process.kill()
    await asyncio.to_thread(process.wait)

    response = await client.post("/register", json={"name": "Di", "email": "di@example.com"})
    assert response.status == 503
    assert await db.count_registered(*WIDE) == 0
    later = await db.create_user("Di", "di@example.com")  # the address is free again
    assert later.id == 2


async def test_welcome_email_and_daily_report_end_to_end(
    aiohttp_client: ClientFactory,
    db_settings: Settings,
    db: Database,
    run_worker: RunWorker,
    smtp_server: SmtpRecorder,
) -> None:
    """Two sign-ups, a real worker sends both welcomes; the daily report of their day in
    CRON_TIMEZONE (Auckland, never UTC's date for long) counts them. The web app has the
    worker's settings too: it checks the asked day against today in CRON_TIMEZONE, which
    from 11:00 UTC on is UTC's tomorrow."""
    own = db_settings.model_copy(
        update={"cron_timezone": "Pacific/Auckland", "report_recipients": ("ops@example.com",)}
    )
    db_client = await aiohttp_client(create_app(own), headers=AUTH_HEADERS)
    ids = []
    for name in ("Ann", "Bo"):
        response = await db_client.post(
            "/register", json={"name": name, "email": f"{name.lower()}@example.com"}
        )
        assert response.status == 201, await response.text()
        ids.append((await response.json())["id"])
    await run_worker(own)

    welcomes = sorted(mail.message["Subject"] for mail in smtp_server.messages)
    assert welcomes == ["Welcome Ann!", "Welcome Bo!"]
    users = [await db.get_user(user_id) for user_id in ids]
    assert all(user is not None and user.welcome_sent_at is not None for user in users)

    smtp_server.messages.clear()
    assert own.timezone == AUCKLAND
    days = {user.created_at.astimezone(AUCKLAND).date() for user in users if user}
    day = min(days)
    response = await db_client.post("/reports/daily", json={"day": day.isoformat()})
    assert response.status == 202, await response.text()
    task_id = (await response.json())["task_id"]
    await run_worker(own)
    assert (await status_of(db_client, task_id))["status"] == "SUCCESS"
    [mail] = smtp_server.messages
    report = json.loads(mail.message.get_content())
    assert (report["date"], report["timezone"]) == (day.isoformat(), "Pacific/Auckland")
    assert report["users_registered"] == sum(
        1 for user in users if user and user.created_at.astimezone(AUCKLAND).date() == day
    )
    assert report["users_registered"] >= 1


# ---------------------------------------------------------------- outages


@pytest.fixture(scope="session")
def cluster_folder() -> Iterator[ClusterFolder]:
    folder = ClusterFolder()
    try:
        yield folder
    finally:
        folder.remove()


@pytest.fixture
def private_postgres(cluster_folder: ClusterFolder) -> Iterator[PostgresCluster]:
    """A PostgreSQL server of this test's own, which the test may stop and start again."""
    cluster = PostgresCluster(cluster_folder, free_port())
    cluster.start()
    try:
        yield cluster
    finally:
        if cluster.running:
            cluster.stop()


@dataclass
class Outage:
    """A database the test can make unavailable: a private PostgreSQL server it stops, or
    an SQLite file whose write lock it holds past DATABASE_TIMEOUT (reads still work)."""

    backend: str
    settings: Settings
    begin: Callable[[], Awaitable[None]]
    end: Callable[[], Awaitable[None]]


@pytest.fixture(params=BACKENDS)
def outage_backend(request: pytest.FixtureRequest) -> Iterator[PostgresCluster | None]:
    if request.param == "sqlite":
        yield None
    else:
        yield request.getfixturevalue("private_postgres")


@pytest.fixture
async def outage(
    outage_backend: PostgresCluster | None, settings: Settings, tmp_path: Path
) -> AsyncIterator[Outage]:
    if outage_backend is None:
        yield await _sqlite_outage(settings, tmp_path / "db" / "app.db")
        return
    cluster = outage_backend
    name = f"outage_{uuid.uuid4().hex[:16]}"
    admin = await asyncpg.connect(cluster.admin_url)
    await admin.execute(f'CREATE DATABASE "{name}"')
    await admin.close()
    url = with_database(cluster.admin_url, name)

    async def stop() -> None:
        await asyncio.to_thread(cluster.stop)

    async def start() -> None:
        await asyncio.to_thread(cluster.start)

    yield Outage("postgresql", settings.model_copy(update={"database_url": url}), stop, start)


async def _sqlite_outage(settings: Settings, path: Path) -> Outage:
    own = settings.model_copy(update={"database_url": f"sqlite:///{path}", "database_timeout": 0.3})
    holders: list[aiosqlite.Connection] = []

    async def lock() -> None:
        holder = await aiosqlite.connect(path, isolation_level=None)
        await holder.execute("BEGIN EXCLUSIVE")
        holders.append(holder)

    async def unlock() -> None:
        holder = holders.pop()
        await holder.execute("ROLLBACK")
        await holder.close()

    return Outage("sqlite", own, lock, unlock)


async def test_register_while_the_database_is_down_is_503_and_leaves_nothing(
    aiohttp_client: ClientFactory, outage: Outage, redis: ArqRedis
) -> None:
    client = await aiohttp_client(create_app(outage.settings), headers=AUTH_HEADERS)
    before = await client.post("/register", json={"name": "Ann", "email": "ann@example.com"})
    assert before.status == 201

    await outage.begin()
    try:
        response = await client.post("/register", json={"name": "Bo", "email": "bo@example.com"})
        assert response.status == 503
        assert response.headers["Retry-After"] == "5"
        assert (await response.json())["error"] == (
            "the users database is unavailable, try again shortly"
        )
    finally:
        await outage.end()

    assert await queued(redis, outage.settings) == [(await before.json())["task_id"]]
    again = await client.post("/register", json={"name": "Bo", "email": "bo@example.com"})
    assert again.status == 201  # no row was left for the address: the service recovered
    db = await open_database(outage.settings)
    try:
        assert await db.count_registered(*WIDE) == 2
    finally:
        await db.close()


@pytest.fixture
async def worker_on_outage(outage: Outage, redis: ArqRedis) -> AsyncIterator[Worker]:
    """A real worker polling the queue (not a burst run: it must be up, its database open,
    before the outage begins and stay up through it), with tries enough to outlast it."""
    patient = outage.settings.model_copy(
        update={"job_max_tries": 200, "retry_backoff_base": 0.05, "retry_backoff_max": 0.2}
    )
    options = worker_options(patient)
    options.update(handle_signals=False, poll_delay=0.01)
    worker = Worker(**options)
    task = asyncio.create_task(worker.main())

    async def ready() -> bool:
        return "db" in worker.ctx or task.done()

    await wait_until(ready, within=30)
    yield worker
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    await worker.close()


async def test_jobs_needing_the_database_retry_through_an_outage_then_finish(
    aiohttp_client: ClientFactory,
    outage: Outage,
    redis: ArqRedis,
    worker_on_outage: Worker,
    smtp_server: SmtpRecorder,
) -> None:
    """Queued while the database is down, the welcome email (and on PostgreSQL the daily
    report, whose count is a read that a locked SQLite file still answers) is RETRY with the
    reason, not FAILURE; back up, each finishes, and the email went out once."""
    client = await aiohttp_client(create_app(outage.settings), headers=AUTH_HEADERS)
    db = await open_database(outage.settings)
    try:
        user = await db.create_user("Ann", "ann@example.com")
    finally:
        await db.close()

    await outage.begin()
    try:
        waiting = [await enqueue(redis, "send_welcome_email", {"user_id": user.id})]
        if outage.backend == "postgresql":
            report = await client.post("/reports/daily", json={"day": RECENT_DAY})
            waiting.append((await report.json())["task_id"])

        reasons: dict[str, str] = {}

        async def all_retrying() -> bool:
            for task_id in waiting:  # read together: a next attempt may start at any time
                state = await status_of(client, task_id)
                if state["status"] == "RETRY":
                    reasons[task_id] = state["error"]
            return len(reasons) == len(waiting)

        await wait_until(all_retrying, within=30)
        for reason in reasons.values():
            assert reason.startswith("the users database is unavailable: "), reason
    finally:
        await outage.end()

    async def all_done() -> bool:
        states = [await status_of(client, task_id) for task_id in waiting]
        return all(state["status"] == "SUCCESS" for state in states)

    await wait_until(all_done, within=30)
    assert [mail.message["Subject"] for mail in smtp_server.messages] == ["Welcome Ann!"]


async def test_health_reports_the_database_and_its_return(
    aiohttp_client: ClientFactory,
    private_postgres: PostgresCluster,
    settings: Settings,
    redis: ArqRedis,
) -> None:
    url = with_database(private_postgres.admin_url, "postgres")
    own = settings.model_copy(update={"database_url": url})
    client = await aiohttp_client(create_app(own))

    async def health() -> tuple[int, dict[str, Any]]:
        response = await client.get("/health")
        return response.status, await response.json()

    status, body = await health()
    assert (status, body["status"], body["dependencies"]["database"]) == (200, "ok", "ok")

    await asyncio.to_thread(private_postgres.stop)
    status, body = await health()
    assert (status, body["status"], body["redis"]) == (200, "degraded", "ok")
    assert body["dependencies"] == {"database": "unreachable", "storage": "ok"}

    await asyncio.to_thread(private_postgres.start)
    status, body = await health()
    assert (status, body["status"]) == (200, "ok")


# ---------------------------------------------------------------- start-up and settings


@pytest.mark.parametrize("command", [["-m", "web"], ["-m", "arq", "service.WorkerSettings"]])
@pytest.mark.parametrize("backend", BACKENDS)
async def test_a_database_that_cannot_be_opened_stops_the_start_naming_database_url(
    settings: Settings, tmp_path: Path, command: list[str], backend: str
) -> None:
    """PostgreSQL: nothing listens on the port. SQLite: the file's folder would have to be
    made inside a regular file. Either way: one line, no traceback, no password, exit 1."""
    if backend == "postgresql":
        url = f"postgresql://app:s3cret-pw@127.0.0.1:{free_port()}/app"
        shown = f"DATABASE_URL={url.replace('s3cret-pw', '***')}: "
    else:
        blocker = tmp_path / "not-a-folder"
        await asyncio.to_thread(blocker.write_text, "")
        url = shown = f"sqlite:///{blocker}/app.db"
    env = service_env(settings, DATABASE_URL=url, API_TOKENS="test-token-0123456789abcdef")
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        *command,
        cwd=ROOT,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    output = (await asyncio.wait_for(process.communicate(), 60))[0].decode()
    assert process.returncode == 1, output
    assert "cannot open the users database at DATABASE_URL=" in output
    assert shown in output
    assert "s3cret-pw" not in output
    assert "Traceback" not in output


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        ("mysql://app:s3cret-pw@db/app", "must be sqlite:///path/to/app.db or postgresql://"),
        ("sqlite://", "a SQLite URL names a file"),
        ("postgresql://app:s3cret-pw@db:port/app", "the port must be a number"),
        ("postgresql://app:s3cret-pw@/app", "a PostgreSQL URL needs a host"),
    ],
)
def test_a_bad_database_url_stops_the_start_naming_the_variable_not_the_password(
    monkeypatch: pytest.MonkeyPatch, value: str, reason: str
) -> None:
    monkeypatch.setenv("DATABASE_URL", value)
    with pytest.raises(SettingsError) as refused:
        load_settings()
    message = str(refused.value)
    assert "DATABASE_URL" in message
    assert reason in message
    assert "s3cret-pw" not in message


def test_database_url_shown_masks_the_password_and_defaults_to_data_dir(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("DATABASE_URL", raising=False)
    monkeypatch.setenv("DATA_DIR", "/srv/jobs")
    default = load_settings()
    assert (default.database_backend, default.database_path) == ("sqlite", Path("/srv/jobs/app.db"))
    assert default.database_url_shown == "sqlite:////srv/jobs/app.db"
    monkeypatch.setenv("DATABASE_URL", "postgresql://app:p%40ss@db:5433/app?password=x&ssl=on")
    postgres = load_settings()
    assert postgres.database_backend == "postgresql"
    assert postgres.database_url_shown == "postgresql://app:***@db:5433/app?password=***&ssl=on"
    monkeypatch.setenv("DATABASE_URL", "sqlite:///relative/users.db")
    assert load_settings().database_path == Path("relative/users.db")
