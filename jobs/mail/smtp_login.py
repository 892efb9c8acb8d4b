"""Logging in to the SMTP server only over TLS, unless plain-text logins are allowed explicitly.

AUTH PLAIN and LOGIN carry the password base64-encoded, which is clear text to anyone on the
path. So when SMTP_USERNAME is set, a connection without SMTP_TLS or SMTP_STARTTLS upgrades
with STARTTLS whenever the server offers it (the certificate is checked as for SMTP_STARTTLS),
and a connection still without TLS then is refused before any AUTH command leaves, with a
permanent error: retrying would meet the same server. SMTP_ALLOW_PLAINTEXT_AUTH=true lets a
login go over a plain connection (a relay on loopback, or one reached through a tunnel).
"""

from __future__ import annotations

import contextlib

import aiosmtplib

from jobs.mail.config import SmtpConfig
from service.runtime import PermanentError

PLAINTEXT_REFUSED = (
    "refused to send the SMTP login without TLS: the server does not offer STARTTLS; set"
    " SMTP_TLS or SMTP_STARTTLS for a server that speaks TLS, or SMTP_ALLOW_PLAINTEXT_AUTH=true"
    " to send the password in clear"
)


def start_tls_mode(config: SmtpConfig) -> bool | None:
    """aiosmtplib's ``start_tls``: True (required), None (when offered), False (never)."""
    if config.start_tls:
        return True
    if config.use_tls:
        return False  # already TLS from the first byte
    # a login is coming: take TLS whenever the server offers it, even if plain text is allowed
    return None if config.username is not None else False


async def log_in(client: aiosmtplib.SMTP, config: SmtpConfig) -> None:
    """AUTH on a connected client when a username is configured, never in clear unless allowed."""
    if config.username is None:
        return
    encrypted = client.get_transport_info("ssl_object") is not None
    if not encrypted and not config.allow_plaintext_auth:
        with contextlib.suppress(aiosmtplib.SMTPException, OSError, TimeoutError):
            await client.quit()  # a polite goodbye: the server need not wait for a timeout
        raise PermanentError(PLAINTEXT_REFUSED)
    await client.login(config.username, config.password or "")
