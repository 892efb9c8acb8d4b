"""The job-runtime API: everything a job module may import from ``service``.

A job is a coroutine ``async def my_job(ctx: JobContext, *, arg: T) -> R`` declared once, in
its own module, with :class:`Job`, and listed in jobs/registry.py (README "Add your own
job"). import-linter keeps jobs/ to this package: what a job may use is exactly this list.

- :class:`JobContext`: its ``ctx``: settings, the worker's Redis client, a shared HTTP
  session, a thread pool for blocking work, the users database, metrics, ``job_id``,
  ``job_try``, ``progress`` (``await ctx["progress"]("resized", done=2, total=3)``) and
  ``lease`` (how long a lock the job takes should live);
- :class:`TransientError` (retried with backoff) and :class:`PermanentError` (fails at once):
  how a job fails; the message is what the status API shows, so keep internals out of it
  (raise it ``from`` the error with the details: the worker's log shows them);
  :func:`connection_problem` names a connection failure without its address;
- :class:`Job`, :class:`Cron`, :class:`RetryPolicy`, :class:`SlotLimit`,
  :class:`RateLimit`: the declaration;
  :class:`JobInput`, :class:`NoInput` and the field types :data:`EmailAddress`,
  :data:`MailRecipient`, :data:`HeaderText` for its input model; :func:`settings_in` for validators;
  :func:`text_refusal`: why a text may not go into a mail header (service.runtime.text);
- :func:`webhook_destination`, :func:`smtp_destination`: what a job's ``destination`` names
  (the circuit breaker it obeys); a TransientError with ``unavailable=True`` opens it at once;
- :func:`job_key`: a Redis key of the job's own (a "sent" marker, a lock);
- :func:`count_today`, :func:`day_counts`, :func:`today`: the day's counters the daily
  report reads;
- :func:`write_atomically`: a file written whole or not at all (run it in ``ctx["executor"]``);
- ``ctx["storage"]`` (:class:`Storage`: folders or an S3 bucket) for uploads, thumbnails and
  reports, with its areas :data:`UPLOADS` and :data:`REPORTS`; it raises
  :class:`StorageUnavailableError` while it does not answer (make that a TransientError).

May import: ``records``, ``engine`` (its queue layout), ``store``, ``observability``.
"""

from service.records.breakers import smtp_destination, webhook_destination
from service.records.progress import Progress
from service.records.stats import count_today, day_counts, today
from service.runtime.context import JobContext
from service.runtime.declaration import (
    Cron,
    Job,
    RateLimit,
    Registry,
    RetryPolicy,
    SlotLimit,
)
from service.runtime.errors import PermanentError, TransientError, connection_problem
from service.runtime.inputs import (
    EmailAddress,
    HeaderText,
    JobInput,
    MailRecipient,
    NoInput,
    no_control_characters,
    settings_in,
    untrimmed_at_most,
)
from service.runtime.text import refusal as text_refusal
from service.store.files import write_atomically
from service.store.keys import job_key
from service.store.storage import REPORTS, UPLOADS, Storage, StorageUnavailableError

__all__ = [
    "REPORTS",
    "UPLOADS",
    "Cron",
    "EmailAddress",
    "HeaderText",
    "Job",
    "JobContext",
    "JobInput",
    "MailRecipient",
    "NoInput",
    "PermanentError",
    "Progress",
    "RateLimit",
    "Registry",
    "RetryPolicy",
    "SlotLimit",
    "Storage",
    "StorageUnavailableError",
    "TransientError",
    "connection_problem",
    "count_today",
    "day_counts",
    "job_key",
    "no_control_characters",
    "settings_in",
    "smtp_destination",
    "text_refusal",
    "today",
    "untrimmed_at_most",
    "webhook_destination",
    "write_atomically",
]
