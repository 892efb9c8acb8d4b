"""``python -m web``: serve the API on WEB_HOST:WEB_PORT."""

from __future__ import annotations

import logging
import sys

from aiohttp import web

from settings import load_settings
from web.app import create_app

NO_TOKENS_HELP = """\
API_TOKENS is empty, so every API route would refuse every request: refusing to start.
Set one or more comma-separated tokens, e.g.
    API_TOKENS="$(python -c 'import secrets; print(secrets.token_urlsafe())')" make web
(`make dev` generates a development token and prints it.)"""


def main() -> None:
    settings = load_settings()
    if not settings.api_tokens:
        sys.exit(NO_TOKENS_HELP)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    web.run_app(create_app(settings), host=settings.web_host, port=settings.web_port)


if __name__ == "__main__":
    main()
