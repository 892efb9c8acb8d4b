"""A delivery ledger entry as stored: secrets masked, size bounded, whatever the job gave.

A job (deliver_webhook) describes what an attempt got back in ``ctx["delivery"]``; the
receiver's answer is text we do not control and may echo a token, a signed URL or a password,
so it is masked here by the one masking rule (service.observability.masking) before it is
stored in the attempt's history entry: secret-looking names in headers and in JSON
``"name": "value"`` pairs, URL credentials and ``?token=`` parameters anywhere.
"""

from __future__ import annotations

import json
import re
from typing import Any

from service.observability.masking import MASK, SECRET_NAME, mask_text, masked

BODY_MAX = 1024  # bytes the body takes as stored (JSON, UTF-8), whatever the job handed over
HEADERS_MAX = 16

_JSON_PAIR = re.compile(r'"([^"\\]{1,100})"(\s*:\s*)"((?:[^"\\]|\\.)*)("?)')


def _mask_json_pair(match: re.Match[str]) -> str:
    name, colon, value, close = match.groups()
    if SECRET_NAME.search(name) and value:
        return f'"{name}"{colon}"{MASK}{close}'
    return match.group(0)


def mask_body(text: str) -> str:
    """The start of an answer's body with secrets masked; a cut JSON text is handled too
    (its last value may have lost its closing quote)."""
    return mask_text(_JSON_PAIR.sub(_mask_json_pair, text))


def stored_size(text: str) -> int:
    """Bytes ``text`` takes in a stored history entry (service.records.attempts.encode)."""
    return len(json.dumps(text, ensure_ascii=False).encode()) - 2  # without its quotes


def fit(text: str, max_bytes: int) -> str:
    """``text`` cut to take at most ``max_bytes`` as stored: escapes (a body of control
    characters, say) count, so no body makes an entry larger than that."""
    while text and stored_size(text) > max_bytes:
        text = text[: min(len(text) - 1, len(text) * max_bytes // stored_size(text))]
    return text


def stored_delivery(delivery: dict[str, Any]) -> dict[str, Any]:
    """``delivery`` as the history keeps it: masked and bounded."""
    headers = delivery.get("headers") or {}
    kept_headers = dict(list(headers.items())[:HEADERS_MAX]) if isinstance(headers, dict) else {}
    raw = delivery.get("body")
    masked_body = mask_body(raw) if isinstance(raw, str) else ""
    body = fit(masked_body, BODY_MAX)
    return {
        "status": delivery.get("status"),
        "duration_ms": delivery.get("duration_ms"),
        "headers": masked(kept_headers),
        "body": body,
        "body_truncated": bool(delivery.get("body_truncated")) or body != masked_body,
    }
