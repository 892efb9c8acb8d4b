"""The bench's worker: ``arq bench.worker.WorkerSettings``.

The service's worker exactly as ``arq service.WorkerSettings`` builds it (same settings, same
tracking, logs and metrics), with the jobs of jobs/registry.py plus the bench's own
(bench/sleep_job.py). Built on first access, as ``service.WorkerSettings`` is, so importing
this module reads no settings.
"""

from __future__ import annotations

from typing import Any

from bench import sleep_job
from jobs.registry import REGISTRY
from service.runtime import Registry

BENCH_REGISTRY = Registry([*REGISTRY, sleep_job.JOB])


def __getattr__(name: str) -> Any:
    if name == "WorkerSettings":
        from service.engine.loop import install
        from service.eventloop import install_uvloop
        from service.worker.options import build_worker_settings
        from settings import load_settings

        install_uvloop()  # as service.WorkerSettings: before arq's Worker creates its loop
        install()
        worker_settings = build_worker_settings(load_settings(), BENCH_REGISTRY)
        globals()["WorkerSettings"] = worker_settings
        return worker_settings
    raise AttributeError(f"module 'bench.worker' has no attribute {name!r}")
