"""Where work comes from: the request being served, carried into the jobs it enqueues.

The web middleware sets :data:`current_origin` for the duration of a request; the worker's job
wrapper sets :data:`log_fields` for the duration of a job. Context variables (rather than
arguments threaded through every call) let :func:`service.queue.enqueue.enqueue` and every log line
pick them up without handlers or jobs having to pass them along.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Callable, Mapping
from contextvars import ContextVar
from dataclasses import dataclass
from types import MappingProxyType

# The job keyword argument that carries the request id; the job wrapper removes it again,
# so job functions never see it. The underscore keeps it clear of any real parameter.
REQUEST_ID_KWARG = "_request_id"

_SANE_REQUEST_ID = re.compile(r"[A-Za-z0-9._:\-]{1,128}")


def _ignore(function: str) -> None:
    """The default enqueue hook: outside a request nothing is counted."""


@dataclass(frozen=True, slots=True)
class Origin:
    """The request on whose behalf jobs are enqueued, and how to count each one."""

    request_id: str
    on_enqueued: Callable[[str], None] = _ignore


current_origin: ContextVar[Origin | None] = ContextVar("jobservice_origin", default=None)

# Extra fields added to every log line written in this context (request id, job id, ...).
log_fields: ContextVar[Mapping[str, str | int]] = ContextVar(
    "jobservice_log_fields", default=MappingProxyType({})
)


def request_id_from(header: str | None) -> str:
    """The client's ``X-Request-ID`` when it is short and plain, else a fresh one.

    Anything else (too long, spaces, control characters) could forge or break log lines,
    so it is replaced rather than trusted.
    """
    if header is not None and _SANE_REQUEST_ID.fullmatch(header):
        return header
    return secrets.token_hex(16)  # 128 random bits, as a uuid4, without building a UUID
