"""Service wiring. ``arq service.WorkerSettings`` starts the worker.

``WorkerSettings`` is built on first access from the environment (see settings.py), so
importing ``service`` for its helpers reads nothing and opens nothing. ``LOGGING`` (the
worker's log set-up, for arq's ``--custom-log-dict``) is built the same way.
"""

from __future__ import annotations

from typing import Any

__all__ = ["LOGGING", "WorkerSettings"]


def __getattr__(name: str) -> Any:
    if name == "LOGGING":  # arq service.WorkerSettings --custom-log-dict service.LOGGING
        from service.observability.logs import logging_config
        from settings import load_settings

        return logging_config(load_settings())
    if name == "WorkerSettings":
        from service.engine.loop import install
        from service.eventloop import install_uvloop
        from service.worker.check import install as install_check
        from service.worker.options import build_worker_settings
        from settings import load_settings

        install_uvloop()  # before arq's Worker creates its loop
        install()  # arq's CLI then builds service.engine.loop's worker
        install_check()  # and answers --check within seconds (service.worker.check)

        worker_settings = build_worker_settings(load_settings())
        globals()["WorkerSettings"] = worker_settings
        return worker_settings
    raise AttributeError(f"module 'service' has no attribute {name!r}")
