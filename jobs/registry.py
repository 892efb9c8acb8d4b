"""Every job the service runs, in one list: the worker, the API and the dashboard read it.

To add a job, write its module (a coroutine and its ``JOB = Job(...)`` declaration) and add
one line here: README "Add your own job".
"""

from __future__ import annotations

from jobs import cleanup, email, events, images, reports, webhooks, welcome
from service.runtime import Registry

REGISTRY = Registry(
    [
        email.JOB,
        welcome.JOB,
        images.JOB,
        webhooks.JOB,
        events.JOB,
        reports.JOB,
        cleanup.JOB,
    ]
)
