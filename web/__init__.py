"""The aiohttp front-end: validates requests, enqueues jobs, reports their status."""

from web.app import create_app

__all__ = ["create_app"]
