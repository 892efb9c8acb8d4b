"""The send_email job: one message to one recipient, sent at most once per job."""

from __future__ import annotations

import json
from typing import Annotated

from pydantic import StringConstraints

from jobs.mail import EMAIL_RATE, MailContext, message_id_for, send_mail, smtp_breaker
from service.runtime import HeaderText, Job, JobInput, MailRecipient, job_key


class SendEmail(JobInput):
    to: MailRecipient
    subject: HeaderText
    body: Annotated[str, StringConstraints(max_length=100_000)]


async def send_email(ctx: MailContext, *, to: str, subject: str, body: str) -> dict[str, str]:
    """Send one email to one recipient (the sender is always MAIL_FROM).

    A re-run after the message was accepted returns the first result instead: the "sent"
    marker is checked before sending and written the moment the server's reply accepts the
    message (before QUIT). Only a worker dying between the end of the data and that write can
    make a re-run send it again, and then with the same Message-ID.
    """
    redis, settings = ctx["redis"], ctx["settings"]
    marker = job_key("sent", ctx["job_id"])
    # an earlier run's marker: read in the round trip that carries the attempt's start
    previous = await redis.get(marker)
    if previous is not None:
        result: dict[str, str] = json.loads(previous)
        return result

    result = {"to": to, "message_id": message_id_for(ctx["job_id"], ctx["smtp"])}

    async def remember_sent() -> None:
        await redis.set(marker, json.dumps(result), ex=settings.job_result_ttl)

    await send_mail(ctx, to=to, subject=subject, body=body, on_accepted=remember_sent)
    return result


JOB = Job(
    name="send_email",
    run=send_email,
    input=SendEmail,
    time_limit=lambda settings: settings.email_job_timeout,
    rate=EMAIL_RATE,
    api=True,
    search_keys=lambda job: [job.to],
    destination=smtp_breaker,
)
