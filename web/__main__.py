"""``python -m web``: serve the API on WEB_HOST:WEB_PORT."""

from __future__ import annotations

import logging
import sys

from aiohttp import web

from service.eventloop import install_uvloop
from service.logs import configure_logging
from settings import load_settings
from web.app import create_app

NO_TOKENS_HELP = """\
API_TOKENS is empty, so every API route would refuse every request: refusing to start.
Set one or more comma-separated tokens, e.g.
    API_TOKENS="$(python -c 'import secrets; print(secrets.token_urlsafe())')" make web
(`make dev` generates a development token and prints it.)"""
logger = logging.getLogger("jobservice.web")


def _announce(banner: str) -> None:
    """aiohttp's start-up banner, as a log line (a bare print would break the JSON lines)."""
    logger.info(banner.splitlines()[0].strip("= "))


def main() -> None:
    settings = load_settings()
    if not settings.api_tokens:
        sys.exit(NO_TOKENS_HELP)
    configure_logging(settings)
    install_uvloop()
    # the app logs one JSON line per request itself (web.observe), so no aiohttp access log
    web.run_app(
        create_app(settings),
        host=settings.web_host,
        port=settings.web_port,
        access_log=None,
        print=_announce,
    )


if __name__ == "__main__":
    main()
