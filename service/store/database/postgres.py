"""The users database in PostgreSQL, through a pool of asyncpg connections per process.

Why: SQLite is one file on one machine; web processes and workers on several machines need
a server they all reach. Each process keeps up to DATABASE_POOL_SIZE connections; every
query and every wait for a free connection is bounded by DATABASE_TIMEOUT, so a server that
is down or unreachable turns into :class:`DatabaseUnavailableError` within that time (503
from the API, a retry for a job) instead of a request or a job hanging. The pool replaces a
connection the server closed (a restart) on its next use, so the service recovers by itself.

Timestamps are ``timestamptz``, written by the server's clock: one clock for every process,
whatever the machines' clocks say.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from datetime import datetime
from typing import TYPE_CHECKING, TypeAlias

import asyncpg

from service.store.database.interface import (
    DatabaseUnavailableError,
    EmailTakenError,
    User,
    fold_email,
)
from service.store.database.migrations import MIGRATIONS, Dialect, Migration, migrate

# What "the server did not answer" looks like from asyncpg: refused or cut connections and
# timeouts (OSError, TimeoutError), a connection lost mid-query (class 08), a server shutting
# down or starting up (class 57), out of connections or disk (class 53).
UNREACHABLE: tuple[type[BaseException], ...] = (
    OSError,
    TimeoutError,
    asyncpg.PostgresConnectionError,
    asyncpg.exceptions.OperatorInterventionError,
    asyncpg.exceptions.InsufficientResourcesError,
)
# The advisory lock every process takes before it migrates ("jobsvcdb" as a bigint); it is
# per database, so databases on one server migrate independently.
MIGRATION_LOCK = 0x6A6F627376636462
# A step, or the wait for another process's, may take longer than a request may.
MIGRATION_TIMEOUT = 120.0

if TYPE_CHECKING:  # generic in asyncpg-stubs only
    from asyncpg.pool import PoolConnectionProxy

    Connection: TypeAlias = PoolConnectionProxy[asyncpg.Record]


def _row_to_user(row: asyncpg.Record) -> User:
    return User(
        id=row["id"],
        name=row["name"],
        email=row["email"],
        created_at=row["created_at"],
        welcome_sent_at=row["welcome_sent_at"],
    )


def unavailable(exc: BaseException) -> DatabaseUnavailableError:
    reason = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
    return DatabaseUnavailableError(f"the users database is unavailable: {reason}")


class _Session:
    """The migration runner's statements, inside the locked transaction."""

    dialect: Dialect = "postgresql"

    def __init__(self, connection: Connection) -> None:
        self._db = connection

    async def execute(self, statement: str) -> None:
        await self._db.execute(statement, timeout=MIGRATION_TIMEOUT)

    async def table_exists(self, name: str) -> bool:
        query = (
            "SELECT EXISTS (SELECT 1 FROM pg_tables"
            " WHERE schemaname = current_schema() AND tablename = $1)"
        )
        return bool(await self._db.fetchval(query, name, timeout=MIGRATION_TIMEOUT))

    async def versions(self) -> list[int]:
        rows = await self._db.fetch(
            "SELECT version FROM schema_version ORDER BY 1", timeout=MIGRATION_TIMEOUT
        )
        return [int(row["version"]) for row in rows]

    async def record(self, version: int, name: str) -> None:
        await self._db.execute(
            "INSERT INTO schema_version (version, name) VALUES ($1, $2)",
            version,
            name,
            timeout=MIGRATION_TIMEOUT,
        )


class PostgresMigrator:
    """PostgreSQL's migration lock: ``pg_advisory_xact_lock`` as the transaction's first
    statement, so a second process blocks there (before it even creates the version table,
    which two sessions cannot do at once) and the lock ends with the transaction, even if
    the process dies mid-way."""

    def __init__(self, connection: Connection) -> None:
        self._db = connection

    @asynccontextmanager
    async def locked(self) -> AsyncIterator[_Session]:
        async with self._db.transaction():
            await self._db.execute(
                "SELECT pg_advisory_xact_lock($1)", MIGRATION_LOCK, timeout=MIGRATION_TIMEOUT
            )
            yield _Session(self._db)


class PostgresDatabase:
    """The :class:`~service.store.database.interface.Database` over an asyncpg pool."""

    def __init__(self, pool: asyncpg.Pool[asyncpg.Record], wait_seconds: float) -> None:
        self._pool = pool
        self._wait = wait_seconds

    @classmethod
    async def open(
        cls,
        dsn: str,
        *,
        pool_size: int,
        wait_seconds: float,
        migrations: Sequence[Migration] = MIGRATIONS,
    ) -> PostgresDatabase:
        """Connect (one connection at once, the others as needed) and migrate; every connect,
        query and wait for a free connection is given ``wait_seconds``."""
        pool = await asyncpg.create_pool(
            dsn,
            min_size=1,
            max_size=pool_size,
            timeout=wait_seconds,
            command_timeout=wait_seconds,
        )
        database = cls(pool, wait_seconds)
        try:
            async with pool.acquire(timeout=wait_seconds) as connection:
                await migrate(PostgresMigrator(connection), migrations)
        except BaseException:
            await database.close()
            raise
        return database

    @asynccontextmanager
    async def _connection(self) -> AsyncIterator[Connection]:
        """A pooled connection; "the server did not answer" becomes DatabaseUnavailableError."""
        try:
            async with self._pool.acquire(timeout=self._wait) as connection:
                yield connection
        except UNREACHABLE as exc:
            raise unavailable(exc) from exc

    async def close(self) -> None:
        """Close the connections; a server that does not answer the goodbye is cut off."""
        try:
            async with asyncio.timeout(self._wait):
                await self._pool.close()
        except TimeoutError:
            self._pool.terminate()

    async def ping(self) -> None:
        async with self._connection() as connection:
            await connection.fetchval("SELECT 1")

    async def create_user(self, name: str, email: str) -> User:
        email = fold_email(email)
        async with self._connection() as connection:
            try:
                row = await connection.fetchrow(
                    "INSERT INTO users (name, email) VALUES ($1, $2)"
                    " RETURNING id, name, email, created_at, welcome_sent_at",
                    name,
                    email,
                )
            except asyncpg.UniqueViolationError:
                raise EmailTakenError(email) from None
        assert row is not None
        return _row_to_user(row)

    async def delete_user(self, user_id: int) -> None:
        async with self._connection() as connection:
            await connection.execute("DELETE FROM users WHERE id = $1", user_id)

    async def get_user(self, user_id: int) -> User | None:
        async with self._connection() as connection:
            row = await connection.fetchrow(
                "SELECT id, name, email, created_at, welcome_sent_at FROM users WHERE id = $1",
                user_id,
            )
        return _row_to_user(row) if row else None

    async def mark_welcome_sent(self, user_id: int) -> None:
        async with self._connection() as connection:
            await connection.execute(
                "UPDATE users SET welcome_sent_at = now()"
                " WHERE id = $1 AND welcome_sent_at IS NULL",
                user_id,
            )

    async def count_registered(self, start: datetime, end: datetime) -> int:
        """Users created in [start, end); both bounds must be timezone-aware."""
        async with self._connection() as connection:
            count = await connection.fetchval(
                "SELECT COUNT(*) FROM users WHERE created_at >= $1 AND created_at < $2", start, end
            )
        return int(count)
