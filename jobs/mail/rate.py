"""EMAIL_RATE_LIMIT: every job that sends one email shares this one limit, across workers."""

from __future__ import annotations

from service.runtime import RateLimit

# one scope for all of them: the SMTP provider counts messages, not which job sent them
EMAIL_RATE = RateLimit(
    scope=lambda kwargs: "email",
    limit=lambda settings: settings.email_rate_limit,
    setting="EMAIL_RATE_LIMIT",
)
