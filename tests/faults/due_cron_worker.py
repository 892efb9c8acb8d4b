"""``python -m tests.faults.due_cron_worker GO_FILE``: the real worker, cron jobs due on cue.

The same worker as ``arq service.WorkerSettings`` (same functions, cron jobs, settings from the
environment), except that both cron jobs are due at the instant written to GO_FILE instead of
at 00:00 and 02:00. Every process waits for that file before it starts, so several of them
race for the same schedule as workers do at midnight.
"""

from __future__ import annotations

import sys
import time
from datetime import datetime
from pathlib import Path

from arq.worker import create_worker

from service.engine.loop import install
from service.worker.options import build_worker_settings
from settings import load_settings


def main() -> None:
    go = Path(sys.argv[1])
    settings = load_settings()
    print("waiting for go", flush=True)
    while not go.exists():
        time.sleep(0.01)  # a child process waiting for its cue, not a test waiting
    due = datetime.fromtimestamp(float(go.read_text()), tz=settings.timezone)
    install()  # as `arq service.WorkerSettings` does
    worker = create_worker(build_worker_settings(settings))
    for cron_job in worker.cron_jobs:
        cron_job.next_run = due
    worker.run()


if __name__ == "__main__":
    main()
