"""The one masking rule: what of a secret-looking value may be shown, anywhere.

Job arguments, error texts and log lines may carry a client's secrets: passwords, tokens, URLs
with credentials (``https://user:pass@host``) or secret-looking query parameters
(``?token=...``). The dashboard masks arguments with :func:`masked`; every error text the
worker stores and every log line either process writes goes through :func:`mask_text`, so the
same value is hidden the same way wherever it would appear.
"""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import urlsplit, urlunsplit

MASK = "••••••"
SECRET_NAME = re.compile(
    r"pass|secret|token|api.?key|auth|credential|signature|cookie|session|private", re.I
)
# A URL inside free text: up to whitespace, a quote or a bracket (as exception texts quote them).
_URL_IN_TEXT = re.compile(r"\b[a-z][a-z0-9+.\-]*://[^\s'\"<>`]+", re.I)
# ``user:password@`` in an address that is not a whole URL (``ws.host:443`` shapes are left).
_CREDENTIALS = re.compile(r"(?<![\w/])[^\s/@:'\"<>]+:[^\s/@'\"<>]+@(?=[\w.\-\[])")
# ``token=...`` outside a URL: a name that looks secret, then its value up to a separator.
_SECRET_PAIR = re.compile(r"(?<![\w])([\w.\-]*?)=([^\s&'\"<>,;)\]]+)")


def _mask_query(query: str) -> str:
    return "&".join(
        f"{name}={MASK}" if SECRET_NAME.search(name) and value else f"{name}{sep}{value}"
        for name, sep, value in (pair.partition("=") for pair in query.split("&") if pair)
    )


def mask_url(text: str) -> str:
    """``https://user:pw@host/path?token=x`` keeps its shape, loses its secrets."""
    try:
        parts = urlsplit(text)
    except ValueError:
        return text
    if not parts.scheme or not parts.netloc:
        return text
    netloc = parts.netloc
    if "@" in netloc:
        netloc = f"{MASK}@{netloc.rsplit('@', 1)[1]}"
    return urlunsplit((parts.scheme, netloc, parts.path, _mask_query(parts.query), parts.fragment))


def _mask_pair(match: re.Match[str]) -> str:
    name, value = match.group(1), match.group(2)
    return f"{name}={MASK}" if SECRET_NAME.search(name) and value != MASK else match.group(0)


def mask_text(text: str) -> str:
    """Free text (an error, a log line) with every URL's secrets and secret-looking
    ``name=value`` pairs masked."""
    if not text or ("=" not in text and "@" not in text):  # most lines: nothing to look for
        return text
    text = _URL_IN_TEXT.sub(lambda match: mask_url(match.group(0)), text)
    text = _CREDENTIALS.sub(f"{MASK}@", text)
    return _SECRET_PAIR.sub(_mask_pair, text)


def masked(value: Any, name: str = "") -> Any:
    """``value`` with every secret-looking field replaced by a mask, recursively."""
    if name and SECRET_NAME.search(name) and value not in (None, ""):
        return MASK
    if isinstance(value, dict):
        return {str(key): masked(item, str(key)) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [masked(item) for item in value]
    if isinstance(value, str):
        return mask_url(value)
    return value
