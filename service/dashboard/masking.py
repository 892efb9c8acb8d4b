"""Job arguments as the dashboard shows them: secrets masked, long values cut short.

Arguments are whatever a client sent, so they may hold passwords, tokens or URLs with
credentials; the dashboard never shows those, whoever is signed in.
"""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from service.observability.origin import REQUEST_ID_KWARG

MASK = "••••••"
SECRET_NAME = re.compile(
    r"pass|secret|token|api.?key|auth|credential|signature|cookie|session|private", re.I
)
SHORT_VALUE = 40


def _mask_url(text: str) -> str:
    """``https://user:pw@host/path?token=x`` keeps its shape, loses its secrets."""
    try:
        parts = urlsplit(text)
    except ValueError:
        return text
    if parts.scheme not in {"http", "https"} or not parts.netloc:
        return text
    netloc = parts.netloc
    if "@" in netloc:
        netloc = f"{MASK}@{netloc.rsplit('@', 1)[1]}"
    query = "&".join(
        f"{name}={MASK}" if SECRET_NAME.search(name) else f"{name}={value}"
        for name, _, value in (pair.partition("=") for pair in parts.query.split("&") if pair)
    )
    return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))


def masked(value: Any, name: str = "") -> Any:
    """``value`` with every secret-looking field replaced by a mask, recursively."""
    if name and SECRET_NAME.search(name) and value not in (None, ""):
        return MASK
    if isinstance(value, dict):
        return {str(key): masked(item, str(key)) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [masked(item) for item in value]
    if isinstance(value, str):
        return _mask_url(value)
    return value


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
