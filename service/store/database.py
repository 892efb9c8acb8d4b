"""The users table in SQLite, reached asynchronously through aiosqlite.

The web app and the worker each open one connection at start-up; WAL mode lets both
processes read and write the same file without blocking each other for long.
"""

from __future__ import annotations

import asyncio
import sqlite3
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import aiosqlite

from service.store.files import make_folders

SCHEMA = """
CREATE TABLE IF NOT EXISTS users (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    name TEXT NOT NULL,
    email TEXT NOT NULL UNIQUE,
    created_at TEXT NOT NULL,
    welcome_sent_at TEXT
);
CREATE INDEX IF NOT EXISTS users_created_at ON users (created_at);
"""


class EmailTakenError(Exception):
    """The address is already registered."""


@dataclass(frozen=True, slots=True)
class User:
    id: int
    name: str
    email: str
    created_at: datetime
    welcome_sent_at: datetime | None


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


SETUP_TRIES = 8  # switching a new file to WAL can meet "database is locked" without waiting


async def _prepare(connection: aiosqlite.Connection) -> None:
    """WAL mode and the schema, retried: when several workers open a new database at once,
    SQLite answers "database is locked" at once to all but one of them (no busy wait for a
    journal-mode change), which used to crash those workers at start."""
    for attempt in range(SETUP_TRIES):
        try:
            await connection.execute("PRAGMA busy_timeout=10000")
            await connection.execute("PRAGMA journal_mode=WAL")
            await connection.executescript(SCHEMA)
            await connection.commit()
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or attempt == SETUP_TRIES - 1:
                raise
            await connection.rollback()
            await asyncio.sleep(0.02 * 2**attempt)


class Database:
    """A thin typed layer over one aiosqlite connection."""

    def __init__(self, connection: aiosqlite.Connection) -> None:
        self._db = connection

    @classmethod
    async def open(cls, path: Path) -> Database:
        await asyncio.get_running_loop().run_in_executor(None, make_folders, path.parent)
        pending = aiosqlite.connect(path, timeout=10)
        # A daemon thread: a worker whose Redis stays away past REDIS_RETRY_SECONDS dies
        # without reaching on_shutdown (arq's close() fails first), and a live non-daemon
        # thread would keep that dead process from ever exiting. SQLite rolls back whatever
        # was not committed; a clean stop still closes the connection in on_shutdown.
        pending._thread.daemon = True
        connection = await pending
        connection.row_factory = sqlite3.Row
        try:
            await _prepare(connection)
        except BaseException:
            await connection.close()
            raise
        return cls(connection)

    async def close(self) -> None:
        await self._db.close()

    async def create_user(self, name: str, email: str) -> User:
        try:
            cursor = await self._db.execute(
                "INSERT INTO users (name, email, created_at) VALUES (?, ?, ?)",
                (name, email, _utc_now()),
            )
        except sqlite3.IntegrityError:
            raise EmailTakenError(email) from None
        await self._db.commit()
        user_id = cursor.lastrowid
        assert user_id is not None
        user = await self.get_user(user_id)
        assert user is not None
        return user

    async def delete_user(self, user_id: int) -> None:
        await self._db.execute("DELETE FROM users WHERE id = ?", (user_id,))
        await self._db.commit()

    async def get_user(self, user_id: int) -> User | None:
        async with self._db.execute("SELECT * FROM users WHERE id = ?", (user_id,)) as cursor:
            row = await cursor.fetchone()
        return _row_to_user(row) if row else None

    async def mark_welcome_sent(self, user_id: int) -> None:
        await self._db.execute(
            "UPDATE users SET welcome_sent_at = ? WHERE id = ? AND welcome_sent_at IS NULL",
            (_utc_now(), user_id),
        )
        await self._db.commit()

    async def count_registered(self, start: datetime, end: datetime) -> int:
        """Users created in [start, end); both bounds must be timezone-aware."""
        async with self._db.execute(
            "SELECT COUNT(*) FROM users WHERE created_at >= ? AND created_at < ?",
            (start.astimezone(UTC).isoformat(), end.astimezone(UTC).isoformat()),
        ) as cursor:
            row = await cursor.fetchone()
        return int(row[0]) if row else 0
