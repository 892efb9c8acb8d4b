"""Where and how the worker sends mail, and the ctx of jobs that do."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from service.runtime import JobContext, smtp_destination
from settings import Settings

if TYPE_CHECKING:
    from jobs.mail.smtp_pool import SmtpPool


@dataclass(frozen=True, slots=True)
class SmtpConfig:
    """The SMTP server and sender; built once from settings in the worker's start-up."""

    host: str
    port: int
    username: str | None
    password: str | None
    use_tls: bool
    start_tls: bool
    timeout: float
    sender: str
    allow_plaintext_auth: bool = False  # log in over a connection without TLS (smtp_login.py)

    @classmethod
    def from_settings(cls, settings: Settings) -> SmtpConfig:
        return cls(
            host=settings.smtp_host,
            port=settings.smtp_port,
            username=settings.smtp_username,
            password=settings.smtp_password,
            use_tls=settings.smtp_tls,
            start_tls=settings.smtp_starttls,
            timeout=settings.smtp_timeout,
            sender=settings.mail_from,
            allow_plaintext_auth=settings.smtp_allow_plaintext_auth,
        )


class MailContext(JobContext):
    """The ctx of a job that sends mail: the worker's start-up adds these two."""

    smtp: SmtpConfig
    smtp_pool: SmtpPool  # open connections to the SMTP server, reused across emails


def smtp_breaker(kwargs: Mapping[str, Any], settings: Settings) -> str:
    """The circuit breaker every mail-sending job obeys: the SMTP server's (a ``Job``'s
    ``destination``, service.worker.breakers)."""
    return smtp_destination()
