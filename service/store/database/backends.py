"""Opening the backend DATABASE_URL names, the one way every process does it at start-up.

Why one function: the web app, the worker and the tests open the database alike, and a
start-up failure reads alike from each: one line naming DATABASE_URL (its password masked)
and the reason, raised as :class:`DatabaseOpenError` for the entry points to exit with.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from urllib.parse import parse_qsl, urlsplit

import asyncpg

from service.store.database.interface import (
    Database,
    DatabaseOpenError,
    DatabaseUnavailableError,
)
from service.store.database.migrations import MIGRATIONS, Migration, SchemaError
from service.store.database.postgres import PostgresDatabase
from service.store.database.sqlite import SqliteDatabase
from settings import Settings

# Anything that stops the database opening: unreachable, refused (password, missing
# database), a folder that cannot be made, a schema this code cannot upgrade.
OPEN_ERRORS: tuple[type[BaseException], ...] = (
    OSError,
    TimeoutError,
    ValueError,
    sqlite3.Error,
    asyncpg.PostgresError,
    asyncpg.InterfaceError,
    DatabaseUnavailableError,
    SchemaError,
)


async def open_database(
    settings: Settings, migrations: Sequence[Migration] = MIGRATIONS
) -> Database:
    """The users database of ``settings``, its schema brought up to date (migrations.py)."""
    try:
        if settings.database_backend == "postgresql":
            assert settings.database_url is not None
            return await PostgresDatabase.open(
                settings.database_url,
                pool_size=settings.database_pool_size,
                wait_seconds=settings.database_timeout,
                migrations=migrations,
            )
        return await SqliteDatabase.open(
            settings.database_path, wait_seconds=settings.database_timeout, migrations=migrations
        )
    except OPEN_ERRORS as exc:
        raise DatabaseOpenError(_open_failed(settings, exc)) from exc


def _open_failed(settings: Settings, exc: BaseException) -> str:
    where = settings.database_url_shown
    if settings.database_url is None:
        where += " (the default: DATA_DIR/app.db)"
    reason = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
    for secret in _passwords(settings.database_url or ""):
        reason = reason.replace(secret, "***")  # a driver's message might quote it
    return f"cannot open the users database at DATABASE_URL={where}: {reason}"


def _passwords(url: str) -> list[str]:
    parts = urlsplit(url)
    found = [parts.password] if parts.password else []
    found += [value for key, value in parse_qsl(parts.query) if key == "password" and value]
    return found
