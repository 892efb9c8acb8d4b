"""``python -m web``: serve the API on WEB_HOST:WEB_PORT."""

from __future__ import annotations

import logging

from aiohttp import web

from settings import load_settings
from web.app import create_app


def main() -> None:
    settings = load_settings()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    web.run_app(create_app(settings), host=settings.web_host, port=settings.web_port)


if __name__ == "__main__":
    main()
