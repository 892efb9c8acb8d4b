"""``python -m tests.faults.catch_up_worker GO_FILE``: the real worker, its schedules missed.

The same worker as ``arq service.WorkerSettings`` (same functions, settings from the
environment, CRON_CATCH_UP included), except that both schedules are moved to the time of
day written to GO_FILE, a moment that has just passed: started after it, the worker finds
each schedule's run missed, as a worker does when it starts after a night with none up.
Every process waits for that file before it starts, so several of them start together.
"""

from __future__ import annotations

import dataclasses
import sys
import time
from datetime import datetime
from pathlib import Path

from arq.worker import create_worker

from jobs.registry import REGISTRY
from service.engine.loop import install
from service.runtime import Cron, Registry
from service.worker.options import build_worker_settings
from settings import load_settings


def main() -> None:
    go = Path(sys.argv[1])
    settings = load_settings()
    print("waiting for go", flush=True)
    while not go.exists():
        time.sleep(0.01)  # a child process waiting for its cue, not a test waiting
    missed = datetime.fromtimestamp(float(go.read_text()), tz=settings.timezone)
    at = Cron(hour=missed.hour, minute=missed.minute, second=missed.second)
    registry = Registry(
        dataclasses.replace(job, cron=at) if job.cron is not None else job for job in REGISTRY
    )
    install()  # as `arq service.WorkerSettings` does
    create_worker(build_worker_settings(settings, registry)).run()


if __name__ == "__main__":
    main()
