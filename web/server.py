"""Serving the app: one process, or WEB_PROCESSES of them under gunicorn.

One event loop keeps one core busy at most. With WEB_PROCESSES > 1, gunicorn (aiohttp's own
worker class) forks that many processes sharing the port and restarts any that dies; each
builds its app, and so opens its own Redis pool, after the fork.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web
from aiohttp.worker import GunicornUVLoopWebWorker, GunicornWebWorker
from gunicorn.app.base import BaseApplication
from gunicorn.arbiter import Arbiter

from service.eventloop import install_uvloop, uvloop_available
from service.gc_tuning import tune_gc
from service.observability.logs import logging_config
from settings import Settings
from web.app import create_app
from web.front_door import FrontDoorRunner

logger = logging.getLogger("jobservice.web")


def _announce(banner: str) -> None:
    """aiohttp's start-up banner, as a log line (a bare print would break the JSON lines)."""
    logger.info(banner.splitlines()[0].strip("= "))


def serve(settings: Settings) -> None:
    """Serve until SIGINT/SIGTERM, in this process or in WEB_PROCESSES worker processes.
    The garbage collector is set for a long-running process first (service.gc_tuning); under
    gunicorn its workers, forked from this one, inherit the setting and the frozen objects."""
    tune_gc()
    if settings.web_processes > 1:
        GunicornServer(settings).run()
        return
    install_uvloop()
    # SIGINT/SIGTERM raise GracefulExit in the loop (the runner's handlers), as under run_app;
    # asyncio.run then cancels _serve_one, whose clean-up shuts the app down
    with contextlib.suppress(web.GracefulExit, KeyboardInterrupt):
        asyncio.run(_serve_one(settings))


async def _serve_one(settings: Settings) -> None:
    """What ``web.run_app`` does, through the service's own runner (web.front_door)."""
    # the app logs one JSON line per request itself (web.observe), so no aiohttp access log
    runner = FrontDoorRunner(
        create_app(settings),
        header_timeout=settings.request_header_timeout,
        access_log=None,
        handle_signals=True,
    )
    await runner.setup()
    try:
        await web.TCPSite(runner, settings.web_host, settings.web_port).start()
        url = f"http://{bind_address(settings.web_host, settings.web_port)}"
        _announce(f"======== Running on {url} ========")
        await asyncio.Event().wait()  # until a stop signal
    finally:
        await runner.cleanup()


STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGQUIT)


class _StopsWhenToldWhileBooting:
    """A stop signal that reaches a worker before it has its own handlers is not lost.

    Until then the child runs with the handlers inherited from gunicorn's master, which
    only queue the signal in the master's (copied) queue: the worker would boot and serve
    on, and the master wait its graceful timeout before killing it. Here the worker looks
    in that copy once its own handlers are in place. A stop signal that was still pending
    for the master when it forked counts too: the master is then stopping all workers.
    (One that lands within microseconds of the fork, before CPython re-arms signals in the
    child, is dropped by CPython itself: seen in 3 of 4 tries at 0 ms, none at 2 ms.)
    """

    alive: bool

    def init_signals(self) -> None:
        super().init_signals()  # type: ignore[misc]
        early = [sig for sig in Arbiter.SIG_QUEUE if sig in STOP_SIGNALS]
        Arbiter.SIG_QUEUE.clear()  # the master's, copied at the fork: not this worker's
        if early:
            self.alive = False  # as the handlers would: serve nothing more, exit gracefully


class WebWorker(_StopsWhenToldWhileBooting, GunicornWebWorker):
    """aiohttp's gunicorn worker, see :class:`_StopsWhenToldWhileBooting`."""


class UVLoopWebWorker(_StopsWhenToldWhileBooting, GunicornUVLoopWebWorker):
    """aiohttp's uvloop gunicorn worker, see :class:`_StopsWhenToldWhileBooting`."""


def bind_address(host: str, port: int) -> str:
    """gunicorn's ``bind`` for ``host``: IPv6 addresses go in brackets."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


class GunicornServer(BaseApplication):  # type: ignore[misc]  # gunicorn is untyped
    """gunicorn configured in code from Settings: no config file, no command-line parsing."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        super().__init__()

    def load_config(self) -> None:
        log_config = logging_config(self.settings)
        # gunicorn's own lines go through our handler too, so every line is in LOG_FORMAT
        log_config["loggers"]["gunicorn.error"] = {"handlers": [], "propagate": True}
        options: dict[str, Any] = {
            "bind": bind_address(self.settings.web_host, self.settings.web_port),
            "workers": self.settings.web_processes,
            # each worker sets its own loop up
            "worker_class": UVLoopWebWorker if uvloop_available() else WebWorker,
            "accesslog": None,  # one JSON line per request comes from the app itself
            "logconfig_dict": log_config,
            "graceful_timeout": 30,
            "proc_name": "jobservice-web",
        }
        for key, value in options.items():
            self.cfg.set(key, value)

    def load(self) -> Callable[[], Awaitable[web.AppRunner]]:
        settings, cfg = self.settings, self.cfg

        async def app_factory() -> web.AppRunner:
            # the options aiohttp's worker gives the runner it makes when handed an app
            return FrontDoorRunner(
                create_app(settings),
                header_timeout=settings.request_header_timeout,
                keepalive_timeout=cfg.keepalive,
                access_log=None,
                shutdown_timeout=cfg.graceful_timeout / 100 * 95,
            )

        return app_factory
