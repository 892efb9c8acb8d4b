"""The users database in an SQLite file, reached asynchronously through aiosqlite: the default.

Why it stays: ``make dev`` and ``make test`` need nothing installed for it, and one machine
needs nothing more. The web app and the worker each open one connection at start-up; WAL
mode lets both processes read and write the same file without blocking each other for long.
Across machines, use PostgreSQL (README "Choosing the database").

The connection runs in autocommit mode (``isolation_level=None``): each statement is its own
transaction, and the migration runner opens its one explicit ``BEGIN IMMEDIATE`` itself.
Timestamps are ISO-8601 text in UTC, as the file has always held them, so they compare in
time order as strings.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import AsyncIterator, Iterator, Sequence
from contextlib import asynccontextmanager, contextmanager
from datetime import UTC, datetime
from pathlib import Path

import aiosqlite

from service.store.database.interface import (
    DatabaseUnavailableError,
    EmailTakenError,
    User,
    fold_email,
)
from service.store.database.migrations import MIGRATIONS, Dialect, Migration, migrate
from service.store.files import make_folders

SETUP_TRIES = 8  # switching a new file to WAL can meet "database is locked" without waiting
# Errors of the file's state rather than of a query: locked past the busy timeout, disk
# full, the file unreadable or gone. Worth a retry (503, a job's backoff), like a PostgreSQL
# server that does not answer.
UNAVAILABLE_CODES = {
    sqlite3.SQLITE_BUSY,
    sqlite3.SQLITE_LOCKED,
    sqlite3.SQLITE_IOERR,
    sqlite3.SQLITE_FULL,
    sqlite3.SQLITE_CANTOPEN,
}


@contextmanager
def _unavailable_on_file_errors() -> Iterator[None]:
    try:
        yield
    except sqlite3.OperationalError as exc:
        if exc.sqlite_errorcode & 0xFF in UNAVAILABLE_CODES:  # the primary code
            raise DatabaseUnavailableError(f"the users database is unavailable: {exc}") from exc
        raise


def _utc_now() -> str:
    return datetime.now(UTC).isoformat()


def _row_to_user(row: sqlite3.Row) -> User:
    sent = row["welcome_sent_at"]
    return User(
        id=row["id"],
        name=row["name"],
        email=row["email"],
        created_at=datetime.fromisoformat(row["created_at"]),
        welcome_sent_at=datetime.fromisoformat(sent) if sent else None,
    )


async def _use_wal(connection: aiosqlite.Connection) -> None:
    """WAL mode, retried: when several workers open a new file at once, SQLite answers
    "database is locked" at once to all but one of them (a journal-mode change does not wait
    on the busy timeout), which used to crash those workers at start."""
    for attempt in range(SETUP_TRIES):
        try:
            await connection.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or attempt == SETUP_TRIES - 1:
                raise
            await asyncio.sleep(0.02 * 2**attempt)


class _Session:
    """The migration runner's statements, inside the ``BEGIN IMMEDIATE`` transaction."""

    dialect: Dialect = "sqlite"

    def __init__(self, connection: aiosqlite.Connection) -> None:
        self._db = connection

    async def execute(self, statement: str) -> None:
        await self._db.execute(statement)

    async def table_exists(self, name: str) -> bool:
        query = "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?"
        async with self._db.execute(query, (name,)) as cursor:
            return await cursor.fetchone() is not None

    async def versions(self) -> list[int]:
        async with self._db.execute("SELECT version FROM schema_version ORDER BY 1") as cursor:
            return [int(row[0]) for row in await cursor.fetchall()]

    async def record(self, version: int, name: str) -> None:
        await self._db.execute(
            "INSERT INTO schema_version (version, name, applied_at) VALUES (?, ?, ?)",
            (version, name, _utc_now()),
        )


class SqliteMigrator:
    """SQLite's migration lock: ``BEGIN IMMEDIATE`` takes the database's one write lock at
    once (a plain ``BEGIN`` would read first and could find its snapshot stale when it came
    to write), so a second process waits on the busy timeout until the first commits.

    Right after a new file switched to WAL, SQLite may answer "database is locked" to it at
    once, without waiting (as to the switch itself): it is tried again, a few times, since
    no transaction has begun then and nothing can be half done.
    """

    def __init__(self, connection: aiosqlite.Connection) -> None:
        self._db = connection

    async def _begin_immediate(self) -> None:
        for attempt in range(SETUP_TRIES):
            try:
                await self._db.execute("BEGIN IMMEDIATE")
                return
            except sqlite3.OperationalError as exc:
                if exc.sqlite_errorcode != sqlite3.SQLITE_BUSY or attempt == SETUP_TRIES - 1:
                    raise
                await asyncio.sleep(0.02 * 2**attempt)

    @asynccontextmanager
    async def locked(self) -> AsyncIterator[_Session]:
        await self._begin_immediate()
        try:
            yield _Session(self._db)
        except BaseException:
            if self._db.in_transaction:  # some errors (a full disk) end it themselves
                await self._db.execute("ROLLBACK")
            raise
        await self._db.execute("COMMIT")


async def connect(path: Path, wait_seconds: float) -> aiosqlite.Connection:
    """A connection in autocommit mode that waits up to ``wait_seconds`` for another's lock."""
    await asyncio.get_running_loop().run_in_executor(None, make_folders, path.parent)
    pending = aiosqlite.connect(path, timeout=wait_seconds, isolation_level=None)
    # A daemon thread: a worker whose Redis stays away past REDIS_RETRY_SECONDS dies
    # without reaching on_shutdown (arq's close() fails first), and a live non-daemon
    # thread would keep that dead process from ever exiting. SQLite rolls back whatever
    # was not committed; a clean stop still closes the connection in on_shutdown.
    pending._thread.daemon = True
    connection = await pending
    connection.row_factory = sqlite3.Row
    return connection


class SqliteDatabase:
    """The :class:`~service.store.database.interface.Database` over one aiosqlite connection."""

    def __init__(self, connection: aiosqlite.Connection) -> None:
        self._db = connection

    @classmethod
    async def open(
        cls, path: Path, *, wait_seconds: float, migrations: Sequence[Migration] = MIGRATIONS
    ) -> SqliteDatabase:
        """Open (creating the file and its folder if need be) and bring the schema up to date;
        a write waits up to ``wait_seconds`` for another connection's lock."""
        connection = await connect(path, wait_seconds)
        try:
            await _use_wal(connection)
            await migrate(SqliteMigrator(connection), migrations)
        except BaseException:
            await connection.close()
            raise
        return cls(connection)

    async def close(self) -> None:
        await self._db.close()

    async def ping(self) -> None:
        with _unavailable_on_file_errors():
            await self._db.execute("SELECT 1")

    async def create_user(self, name: str, email: str) -> User:
        user = User(0, name, fold_email(email), datetime.now(UTC), None)
        with _unavailable_on_file_errors():
            try:
                cursor = await self._db.execute(
                    "INSERT INTO users (name, email, created_at) VALUES (?, ?, ?)",
                    (user.name, user.email, user.created_at.isoformat()),
                )
            except sqlite3.IntegrityError:
                raise EmailTakenError(user.email) from None
        assert cursor.lastrowid is not None
        return User(cursor.lastrowid, user.name, user.email, user.created_at, None)

    async def delete_user(self, user_id: int) -> None:
        with _unavailable_on_file_errors():
            await self._db.execute("DELETE FROM users WHERE id = ?", (user_id,))

    async def get_user(self, user_id: int) -> User | None:
        with _unavailable_on_file_errors():
            async with self._db.execute("SELECT * FROM users WHERE id = ?", (user_id,)) as cursor:
                row = await cursor.fetchone()
        return _row_to_user(row) if row else None

    async def mark_welcome_sent(self, user_id: int) -> None:
        with _unavailable_on_file_errors():
            await self._db.execute(
                "UPDATE users SET welcome_sent_at = ? WHERE id = ? AND welcome_sent_at IS NULL",
                (_utc_now(), user_id),
            )

    async def count_registered(self, start: datetime, end: datetime) -> int:
        """Users created in [start, end); both bounds must be timezone-aware."""
        with _unavailable_on_file_errors():
            async with self._db.execute(
                "SELECT COUNT(*) FROM users WHERE created_at >= ? AND created_at < ?",
                (start.astimezone(UTC).isoformat(), end.astimezone(UTC).isoformat()),
            ) as cursor:
                row = await cursor.fetchone()
        return int(row[0]) if row else 0
