"""A development mail sink: an aiosmtpd server that saves each message as an .eml file.

``python -m service.dev.mailsink`` listens on SMTP_HOST:SMTP_PORT and writes every message it
receives to DATA_DIR/mail, logging who it was for, so `make dev` sends no real email.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import time
import uuid
from email import message_from_bytes
from email.policy import default as default_policy
from pathlib import Path

from aiosmtpd.smtp import SMTP, Envelope, Session

from settings import load_settings

logger = logging.getLogger("jobservice.mailsink")


class SaveToFolder:
    """aiosmtpd handler: one .eml file per accepted message."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        content = envelope.original_content or b""
        name = f"{time.strftime('%Y%m%dT%H%M%S')}-{uuid.uuid4().hex[:8]}.eml"
        path = self.folder / name
        await asyncio.get_running_loop().run_in_executor(None, path.write_bytes, content)
        subject = message_from_bytes(content, policy=default_policy).get("Subject", "")
        logger.info("mail to %s: %r saved as %s", ", ".join(envelope.rcpt_tos), subject, name)
        return "250 Message accepted for delivery"


async def serve(host: str, port: int, folder: Path) -> None:
    handler = SaveToFolder(folder)
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: SMTP(handler), host=host, port=port)
    logger.info("dev mail sink listening on %s:%d, saving to %s", host, port, folder)
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    async with server:
        await stop.wait()


def main() -> None:
    settings = load_settings()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    settings.mail_dir.mkdir(parents=True, exist_ok=True)
    asyncio.run(serve(settings.smtp_host, settings.smtp_port, settings.mail_dir))


if __name__ == "__main__":
    main()
