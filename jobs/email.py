"""The send_email job: one message to one recipient, sent at most once per job."""

from __future__ import annotations

import json

from jobs.mail.mailer import message_id_for, send_mail
from service.runtime.context import JobContext
from service.store import keys


async def send_email(ctx: JobContext, *, to: str, subject: str, body: str) -> dict[str, str]:
    """Send the message; a re-run after it was accepted returns the first result instead.

    The "sent" marker is checked before sending and written the moment the server's reply
    accepts the message (before QUIT): only a worker dying between the end of the data and
    that write can make a re-run send it again, and then with the same Message-ID.
    """
    redis, settings = ctx["redis"], ctx["settings"]
    marker = keys.email_sent(ctx["job_id"])
    # on a job's first start there is no earlier run whose marker could exist: no round trip
    previous = None if ctx.get("first_start") else await redis.get(marker)
    if previous is not None:
        result: dict[str, str] = json.loads(previous)
        return result

    result = {"to": to, "message_id": message_id_for(ctx["job_id"], ctx["smtp"])}

    async def remember_sent() -> None:
        await redis.set(marker, json.dumps(result), ex=settings.job_result_ttl)

    await send_mail(ctx, to=to, subject=subject, body=body, on_accepted=remember_sent)
    return result
