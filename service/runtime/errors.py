"""The two ways a job can fail, so the retry policy lives in one place (service.worker.tracking).

A failure's message is what API clients read (``/task-status``, ``/jobs/failed``, the
dashboard): a short reason, never an internal host, port, path or traceback. The full story
belongs to the exception it is raised ``from``, which the worker's log line shows with the
job id and request id. :func:`connection_problem` says what went wrong with a connection in
those short terms.
"""

from __future__ import annotations

import errno
import socket
import ssl


class TransientError(Exception):
    """Worth another attempt later: a refused connection, a timeout, a 4xx SMTP reply, a 5xx."""

    def __init__(
        self,
        reason: str,
        *,
        retry_after: float | None = None,
        unavailable: bool = False,
        destination_fault: bool = True,
    ) -> None:
        super().__init__(reason)
        self.reason = reason
        self.retry_after = retry_after
        # the job's destination failed: its circuit breaker counts it. False for a failure of
        # the job's own (a lock another job holds, one recipient deferred by the server)
        self.destination_fault = destination_fault
        # the destination said it is unavailable for now (HTTP 429/503 with Retry-After, SMTP
        # 421): its circuit breaker opens at once instead of after BREAKER_FAILURES failures
        self.unavailable = unavailable


class PermanentError(Exception):
    """Will fail the same way every time: a 5xx SMTP reply, a 4xx webhook answer, a bad file."""


_BY_ERRNO = {
    errno.ECONNREFUSED: "connection refused",
    errno.ECONNRESET: "connection reset",
    errno.ETIMEDOUT: "timed out",
    errno.EHOSTUNREACH: "host unreachable",
    errno.ENETUNREACH: "network unreachable",
    errno.ECONNABORTED: "connection aborted",
    errno.EPIPE: "connection closed",
}


def error_chain(exc: BaseException) -> list[BaseException]:
    """``exc`` and what it was raised from (or during), outermost first."""
    chain: list[BaseException] = []
    current: BaseException | None = exc
    while current is not None and current not in chain and len(chain) < 10:
        chain.append(current)
        current = current.__cause__ or current.__context__
    return chain


def connection_problem(exc: BaseException) -> str:
    """What went wrong with a connection, without the address: "connection refused",
    "timed out", "host name not found"...; read from ``exc`` and the errors it came from."""
    for cause in reversed(error_chain(exc)):  # the innermost says most
        if isinstance(cause, socket.gaierror):
            return "host name not found"
        if isinstance(cause, ssl.SSLError | ssl.CertificateError):
            return "TLS handshake failed"
        if isinstance(cause, TimeoutError):
            return "timed out"
        if isinstance(cause, OSError) and cause.errno in _BY_ERRNO:
            return _BY_ERRNO[cause.errno]
        if isinstance(cause, ConnectionError):
            return "connection closed"
    return "connection failed"
