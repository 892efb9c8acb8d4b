"""Sending email from jobs: the message's bytes, reused SMTP connections and pipelined mail
transactions, with failures sorted into transient (retried) and permanent ones.

A job that sends mail takes a :class:`MailContext` and calls :func:`send_mail`.
"""

from jobs.mail.config import MailContext, SmtpConfig, smtp_breaker
from jobs.mail.mailer import message_id_for, send_mail
from jobs.mail.rate import EMAIL_RATE
from jobs.mail.smtp_pool import SmtpPool

__all__ = [
    "EMAIL_RATE",
    "MailContext",
    "SmtpConfig",
    "SmtpPool",
    "message_id_for",
    "send_mail",
    "smtp_breaker",
]
