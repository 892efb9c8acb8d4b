"""The send_email job: one message to one recipient, sent at most once per job."""

from __future__ import annotations

import json

from jobs.context import JobContext
from jobs.mailer import send_mail
from service import keys


async def send_email(ctx: JobContext, *, to: str, subject: str, body: str) -> dict[str, str]:
    """Send the message; a re-run after it was accepted returns the first result instead.

    The "sent" marker is checked before sending and written after: if the worker dies
    between the two, the message may go out twice, but with the same Message-ID.
    """
    redis, settings = ctx["redis"], ctx["settings"]
    marker = keys.email_sent(ctx["job_id"])
    previous = await redis.get(marker)
    if previous is not None:
        result: dict[str, str] = json.loads(previous)
        return result

    message_id = await send_mail(ctx, to=to, subject=subject, body=body)
    result = {"to": to, "message_id": message_id}
    await redis.set(marker, json.dumps(result), ex=settings.job_result_ttl)
    return result
