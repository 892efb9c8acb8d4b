"""``python -m web``: serve the API on WEB_HOST:WEB_PORT, in WEB_PROCESSES processes."""

from __future__ import annotations

import asyncio
import sys

from service.observability.logs import configure_logging
from service.store.redis_checks import check_redis_at_start
from settings import load_settings
from web.server import serve

NO_TOKENS_HELP = """\
API_TOKENS is empty, so every API route would refuse every request: refusing to start.
Set one or more comma-separated tokens, e.g.
    API_TOKENS="$(python -c 'import secrets; print(secrets.token_urlsafe())')" make web
(`make dev` generates a development token and prints it.)"""


def main() -> None:
    settings = load_settings()
    if not settings.api_tokens:
        sys.exit(NO_TOKENS_HELP)
    configure_logging(settings)
    asyncio.run(check_redis_at_start(settings))  # exits when Redis may evict queued jobs
    serve(settings)


if __name__ == "__main__":
    main()
