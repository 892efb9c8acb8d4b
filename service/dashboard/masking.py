"""Job arguments as the dashboard's tables show them: secrets masked, long values cut short.

Arguments are whatever a client sent, so they may hold passwords, tokens or URLs with
credentials; the dashboard never shows those, whoever is signed in. The rule itself is the
one every error text and log line follows (service.observability.masking).
"""

from __future__ import annotations

from typing import Any

from service.observability.masking import masked
from service.observability.origin import REQUEST_ID_KWARG

SHORT_VALUE = 40


def _short(value: Any) -> str:
    text = repr(value) if isinstance(value, str) else str(value)
    return text if len(text) <= SHORT_VALUE else text[: SHORT_VALUE - 1] + "…"


def short_arguments(args: list[Any], kwargs: dict[str, Any]) -> str:
    """One line for a table cell, e.g. ``upload='3f0c….jpg'``; masked first, then cut."""
    shown = [_short(arg) for arg in masked(list(args))]
    shown += [
        f"{key}={_short(value)}"
        for key, value in masked(dict(kwargs)).items()
        if key != REQUEST_ID_KWARG  # plumbing, not the job's own argument
    ]
    return ", ".join(shown)
