"""``python -m web``: serve the API on WEB_HOST:WEB_PORT, in WEB_PROCESSES processes."""

from __future__ import annotations

import asyncio
import sys

from service.observability.logs import configure_logging
from service.store.database import DatabaseOpenError, open_database
from service.store.redis_checks import check_redis_at_start
from service.store.storage import open_storage
from settings import Settings, load_settings
from web.open_files import raise_open_files_limit
from web.server import serve

NO_TOKENS_HELP = """\
API_TOKENS is empty, so every API route would refuse every request: refusing to start.
Set one or more comma-separated tokens, e.g.
    API_TOKENS="$(python -c 'import secrets; print(secrets.token_urlsafe())')" make web
(`make dev` generates a development token and prints it.)"""


async def _check_dependencies(settings: Settings) -> None:
    """Open file storage and the users database once before serving, in the worker's order:
    a wrong STORAGE_URL, endpoint or key, or a database that cannot be opened, stops
    ``python -m web`` at once with its message, before gunicorn would start (and restart,
    forever) WEB_PROCESSES processes that each fail the same way. The database's schema is
    brought up to date here. Redis's eviction policy and persistence are checked first, as the
    worker checks them (service.store.redis_checks)."""
    await check_redis_at_start(settings)  # exits when Redis may evict queued jobs
    storage = await open_storage(settings)  # StorageStartError: a SystemExit with its message
    await storage.close()
    database = await open_database(settings)
    await database.close()


def main() -> None:
    settings = load_settings()
    if not settings.api_tokens:
        sys.exit(NO_TOKENS_HELP)
    configure_logging(settings)
    raise_open_files_limit(settings)  # before gunicorn forks: its processes inherit it
    try:
        asyncio.run(_check_dependencies(settings))
        serve(settings)  # the app opens both again, and would stop the same way
    except DatabaseOpenError as exc:
        sys.exit(f"web: {exc}")


if __name__ == "__main__":
    main()
