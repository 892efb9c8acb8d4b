"""The two ways a job can fail, so the retry policy lives in one place (service.worker.tracking)."""

from __future__ import annotations


class TransientError(Exception):
    """Worth another attempt later: a refused connection, a timeout, a 4xx SMTP reply, a 5xx."""

    def __init__(self, reason: str, *, retry_after: float | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.retry_after = retry_after


class PermanentError(Exception):
    """Will fail the same way every time: a 5xx SMTP reply, a 4xx webhook answer, a bad file."""
