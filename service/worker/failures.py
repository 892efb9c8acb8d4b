"""What a failed attempt says, and to whom: a short reason for API clients, the whole story
for the worker's log.

Everything a client can read (``/task-status``, ``/jobs/failed``, the dashboard, live events,
arq's stored result) gets :func:`public_reason`: a job's own TransientError / PermanentError
text (which names no internals: service.runtime.errors), or only the type of an unexpected
exception, whose text may quote an internal host, a path or the job's arguments. The log line
of the attempt (service.worker.observe, with the job id and request id) gets
:func:`full_text`: the exception and every error it was raised from. Both go through the one
masking rule, so a URL's credentials and ``?token=`` never appear in either.
"""

from __future__ import annotations

from service.observability.masking import mask_text
from service.runtime import PermanentError, TransientError
from service.store.serialization import JobError, describe_exception

UNEXPECTED = "unexpected error (the worker's log has the details)"
MAX_CHAIN = 10  # errors raised from errors: enough for any real chain, bounded for a cycle


def public_reason(exc: BaseException) -> str:
    """``exc`` as API clients see it, e.g. ``PermanentError: webhook answered 400: not
    retried`` or ``KeyError: unexpected error (...)``."""
    if isinstance(exc, TransientError | PermanentError | JobError):
        return mask_text(describe_exception(exc))
    return f"{type(exc).__name__}: {UNEXPECTED}"


def public_error(exc: BaseException) -> JobError:
    """What arq stores as the failed job's result instead of ``exc`` (raise it ``from exc``,
    so the log keeps the original): its type name and public reason only."""
    reason = public_reason(exc)
    prefix = f"{type(exc).__name__}: "
    return JobError(type(exc).__name__, reason.removeprefix(prefix))


def full_text(exc: BaseException) -> str:
    """``exc`` and the errors it was raised from (or during), for the log: ``A: x <- B: y``."""
    parts: list[str] = []
    seen: list[BaseException] = []
    current: BaseException | None = exc
    while current is not None and current not in seen and len(seen) < MAX_CHAIN:
        seen.append(current)
        parts.append(describe_exception(current))
        current = current.__cause__ or (
            None if current.__suppress_context__ else current.__context__
        )
    return mask_text(" <- ".join(parts))
