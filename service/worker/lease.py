"""How long a worker holds a job it runs: its time limit, plus a margin.

arq 0.28 sets every job's in-progress lock (``arq:in-progress:<id>``) to the *longest*
function timeout in the worker + 10 s (``Worker.in_progress_timeout_s``), so a worker killed
during a 1-second email would hold that email for as long as the slowest report may run.
So the lock is set in two steps here:

1. the worker claims a job (service.engine.claim) with a lock of JOB_LOCK_MARGIN
   (``WakingRedis.start_lock_ms``): just long enough for the job to start;
2. the tracked job's first Redis command sets it to :func:`lease_seconds`: the job's own time
   limit (from its declaration) + JOB_LOCK_MARGIN (service.records.attempt_scripts).

A killed worker's job thus runs again at most its own time limit + JOB_LOCK_MARGIN later; the
job finds the same figure in ``ctx["lease"]`` for locks of its own. The margin must exceed the
longest stall of a worker's event loop between taking a job and starting it, or a second
worker could start the job while the first is about to.
"""

from __future__ import annotations

from service.runtime import Job
from settings import Settings


def lease_seconds(job: Job, settings: Settings) -> float:
    """At most this many seconds after a worker dies, its ``job`` can start again."""
    return job.seconds(settings) + settings.job_lock_margin
