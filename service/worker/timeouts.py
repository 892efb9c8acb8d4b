"""Per-function time limits, and the in-progress lock that follows them.

arq 0.28 sets every job's in-progress lock (``arq:in-progress:<id>``) to the *longest*
function timeout in the worker + 10 s (``Worker.in_progress_timeout_s``), so a worker killed
during a 1-second email would hold that email for as long as the slowest report may run.
So the lock is set in two steps here:

1. the worker claims a job (service.engine.claim) with a lock of JOB_LOCK_MARGIN
   (``WakingRedis.start_lock_ms``): just long enough for the job to start;
2. the tracked job's first Redis command sets it to its own timeout + JOB_LOCK_MARGIN
   (service.records.attempt_scripts, with :func:`rerun_bound`).

A killed worker's job thus runs again at most its own timeout + JOB_LOCK_MARGIN later. The
margin must exceed the longest stall of a worker's event loop between taking a job and
starting it, or a second worker could start the job while the first is about to.
"""

from __future__ import annotations

from service.queue.enqueue import JobName
from settings import Settings


def job_timeouts(settings: Settings) -> dict[JobName, float]:
    """Seconds each function may run: short for mail and webhooks, longer for batch work."""
    return {
        JobName.SEND_EMAIL: settings.email_job_timeout,
        JobName.SEND_WELCOME_EMAIL: settings.email_job_timeout,
        JobName.DELIVER_WEBHOOK: settings.webhook_job_timeout,
        JobName.PROCESS_IMAGE: settings.image_job_timeout,
        JobName.LOG_EVENT: settings.email_job_timeout,
        JobName.DAILY_REPORT: settings.job_timeout,
        JobName.CLEANUP_OLD_FILES: settings.job_timeout,
    }


def rerun_bound(settings: Settings, function: JobName) -> float:
    """At most this many seconds after a worker dies, its ``function`` job can start again."""
    return job_timeouts(settings)[function] + settings.job_lock_margin
