"""The users database: one interface, two backends, one list of schema versions.

- ``interface.py``: :class:`Database`, what the web app (``app[DB]``) and the jobs
  (``ctx["db"]``) may ask of it, and its errors;
- ``sqlite.py``: an SQLite file (the default, ``DATA_DIR/app.db``: nothing to install);
- ``postgres.py``: PostgreSQL through an asyncpg pool (several machines);
- ``migrations.py``: the schema's versions and the runner both backends apply at start;
- ``backends.py``: :func:`open_database`, the backend DATABASE_URL names.
"""

from service.store.database.backends import open_database
from service.store.database.interface import (
    Database,
    DatabaseOpenError,
    DatabaseUnavailableError,
    EmailTakenError,
    User,
)

__all__ = [
    "Database",
    "DatabaseOpenError",
    "DatabaseUnavailableError",
    "EmailTakenError",
    "User",
    "open_database",
]
