"""A job sent back to the queue before it started its attempt: not a retry, not a try.

A worker that takes a job it may not run yet (service.worker.slots: its destination already
holds all the slots it may) raises :class:`Postponed`. The job loop (service.engine.loop)
then puts it back in the queue ``defer`` seconds from now, as for arq's Retry, but writes no
retry line and counts no retry; the wrapper that raised it has already given back the try the
claim counted.
"""

from __future__ import annotations

from arq import Retry


class Postponed(Retry):
    """Put the job back in the queue ``defer`` seconds from now; it has not started."""
