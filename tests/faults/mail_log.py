"""An SMTP server for a test host that writes every message it accepts as a line to a file.

The recorder of tests/conftest.py keeps messages in the test's own memory, which a server in
another network namespace (another process) cannot reach: this one appends a JSON line per
message (recipient, subject, Message-ID, when) that the test reads. The line is written
before the ``250`` reply leaves, so a message the client saw accepted is always in the file;
one whose client vanished before the reply is not (aiosmtpd cancels the handler when the
connection drops), as a real server that never acknowledged it would not deliver it.

A subject starting with ``SLOW`` has its reply held ``hold`` seconds: a worker sending it is
then mid-email for that long.
"""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass
from email import message_from_bytes
from email.policy import default as default_policy
from pathlib import Path
from typing import Any

from aiosmtpd.smtp import SMTP, Envelope, Session

SLOW = "slow"


@dataclass
class MailLog:
    """aiosmtpd handler appending each accepted message to ``path``."""

    path: Path
    hold: float = 0.0

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        message = message_from_bytes(envelope.original_content or b"", policy=default_policy)
        subject = str(message["Subject"])
        if subject.startswith(SLOW):
            await asyncio.sleep(self.hold)
        line = {
            "to": list(envelope.rcpt_tos),
            "subject": subject,
            "message_id": str(message["Message-ID"]),
            "accepted_at": time.time(),
        }
        with self.path.open("a") as out:  # a short append, in this server's own process
            out.write(json.dumps(line) + "\n")
        return "250 OK"


async def serve(path: Path, host: str, port: int, hold: float) -> asyncio.Server:
    """The server, listening on ``host:port`` in this process's loop."""
    handler = MailLog(path, hold)
    loop = asyncio.get_running_loop()
    return await loop.create_server(lambda: SMTP(handler), host, port)


def read(path: Path) -> list[dict[str, Any]]:
    """Every message accepted so far, oldest first (a line still being written is left out)."""
    if not path.exists():
        return []
    *complete, _ = path.read_text().split("\n")
    return [json.loads(line) for line in complete if line.strip()]
