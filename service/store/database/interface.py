"""What the rest of the service may ask of the users database, whichever backend holds it.

The web app (``app[DB]``) and the jobs (``ctx["db"]``) are typed against :class:`Database`
only, so the two backends (``sqlite.py``, ``postgres.py``) are interchangeable and behave
the same: e-mail addresses folded to lower case before they are stored or compared, one
user per address, timestamps timezone-aware in UTC, and an unreachable database reported as
:class:`DatabaseUnavailableError` (the API answers 503, a job is retried) rather than as
the driver's own exception.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Protocol


class EmailTakenError(Exception):
    """The address is already registered (whatever its case)."""


class DatabaseUnavailableError(Exception):
    """The database did not answer (down, unreachable, out of connections, locked past
    DATABASE_TIMEOUT): worth trying again later, unlike a bug in a query."""


class DatabaseOpenError(Exception):
    """The database could not be opened (or its schema brought up to date) at start-up; the
    message names DATABASE_URL, without its password, and the entry points exit with it."""


@dataclass(frozen=True, slots=True)
class User:
    id: int
    name: str
    email: str
    created_at: datetime
    welcome_sent_at: datetime | None


def fold_email(email: str) -> str:
    """The form an address is stored and compared in, the same on both backends: folded here,
    in Python, because SQLite's ``lower()`` folds ASCII only and PostgreSQL's follows the
    database's locale."""
    return email.lower()


class Database(Protocol):
    """The users table, as both backends provide it."""

    async def create_user(self, name: str, email: str) -> User:
        """Insert a user, now; :class:`EmailTakenError` if the folded address exists."""
        ...

    async def delete_user(self, user_id: int) -> None: ...

    async def get_user(self, user_id: int) -> User | None: ...

    async def mark_welcome_sent(self, user_id: int) -> None:
        """Record the welcome email's time, once: a later call keeps the first time."""
        ...

    async def count_registered(self, start: datetime, end: datetime) -> int:
        """Users created in [start, end); both bounds must be timezone-aware."""
        ...

    async def ping(self) -> None:
        """Return when the database answers a trivial query, raise when it does not."""
        ...

    async def close(self) -> None: ...
