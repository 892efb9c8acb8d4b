"""The dev mail sink's captured messages (``DATA_DIR/mail/*.eml``) for the dashboard's Mail page.

Blocking file reads: call :func:`read_mailbox` in a thread pool, never on the event loop.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from email import message_from_bytes
from email.message import EmailMessage
from email.policy import default as default_policy
from pathlib import Path

SHOWN = 50
BODY_LIMIT = 20_000  # characters of each body shown


@dataclass(frozen=True, slots=True)
class CapturedMail:
    name: str
    to: str
    sender: str
    subject: str
    received_at: float  # the file's mtime, seconds since the epoch
    body: str


def _body(message: EmailMessage) -> str:
    part = message.get_body(preferencelist=("plain", "html"))
    if part is None:
        return ""
    try:
        text = str(part.get_content())
    except (LookupError, ValueError):
        return "(this body could not be decoded)"
    return text if len(text) <= BODY_LIMIT else text[:BODY_LIMIT] + "\n…"


def _read(path: Path, received_at: float) -> CapturedMail:
    message = message_from_bytes(path.read_bytes(), policy=default_policy)
    assert isinstance(message, EmailMessage)
    return CapturedMail(
        name=path.name,
        to=str(message.get("To", "")),
        sender=str(message.get("From", "")),
        subject=str(message.get("Subject", "")),
        received_at=received_at,
        body=_body(message),
    )


def read_mailbox(folder: Path, limit: int = SHOWN) -> list[CapturedMail]:
    """The newest ``limit`` messages, newest first; no folder means no mail yet."""
    try:
        entries = [
            entry
            for entry in os.scandir(folder)
            if entry.name.endswith(".eml") and entry.is_file(follow_symlinks=False)
        ]
    except FileNotFoundError:
        return []
    entries.sort(key=lambda entry: entry.stat().st_mtime, reverse=True)
    return [_read(Path(entry.path), entry.stat().st_mtime) for entry in entries[:limit]]
