"""Mailing the daily report: one message to each of REPORT_RECIPIENTS, once per report day.

One message per recipient rather than one with several envelope recipients: each address is
sent to, accepted and recorded on its own, so a recipient the server defers or refuses
delays or fails only its own copy, and a re-run (a retry, or a worker that died mid-way)
sends only to the recipients that have no "mailed" record yet. Recipients do not see each
other's addresses. Every copy carries the job's Message-ID: it is one report.

A day's report is mailed once, whichever job, cron run or API call produced it: each
(day, recipient) has a record in Redis, taken by the job about to send (its id, for as long
as the job may hold it) and turned into "sent" the moment the server accepts. A later or
concurrent run for that day finds it and only writes the file again; asking with
``resend`` mails every recipient again (once per job). The API counts what a request would
mail against RATE_LIMIT_PER_RECIPIENT before queueing it (jobs.reports.recipients_to_mail).
"""

from __future__ import annotations

import json
from datetime import date
from typing import Any

from jobs.mail import MailContext, send_mail
from service.runtime import PermanentError, TransientError, job_key
from settings import Settings

SENT = b"sent"
DAY = 86_400


def mailed_key(day: date, recipient: str) -> str:
    """Whether ``day``'s report went to ``recipient``: a job id while it sends, then "sent"."""
    return job_key("report-mailed", day.isoformat(), recipient)


def sent_for(settings: Settings) -> int:
    """Seconds a "sent" record lives: until its day is past REPORT_MAX_AGE_DAYS, after which
    no request can ask for that day again."""
    return (settings.report_max_age_days + 2) * DAY


async def mail_report(
    ctx: MailContext, report: dict[str, Any], day: date, *, resend: bool = False
) -> str:
    """Send the report to every recipient not yet mailed; the progress step it ends with.

    Every recipient is tried before a failure is raised: a deferral (TransientError) retries
    the job for the ones left, a refusal alone (PermanentError) fails it naming them.
    """
    settings = ctx["settings"]
    if not settings.report_recipients:
        return "no recipients to mail"
    subject = f"Daily report for {report['date']}"
    body = json.dumps(report, indent=2) + "\n"
    deferred: list[str] = []
    refused: list[str] = []
    sent = 0
    for recipient in settings.report_recipients:
        mail = _resend if resend else _mail_once_a_day
        try:
            sent += await mail(ctx, day, recipient, subject, body)
        except TransientError as exc:
            deferred.append(f"{recipient}: {exc.reason}")
        except PermanentError as exc:
            refused.append(f"{recipient}: {exc}")
    if deferred:
        raise TransientError("report not mailed yet to " + "; ".join(deferred + refused))
    if refused:
        raise PermanentError("report not mailed to " + "; ".join(refused))
    return "mailed" if sent else "already mailed for this day"


async def _mail_once_a_day(
    ctx: MailContext, day: date, recipient: str, subject: str, body: str
) -> int:
    """Send unless the day's record says sent, or another job is sending it now; 1 if sent.

    A record holding this job's own id was left by an attempt of this job whose worker died
    (arq runs one attempt of a job at a time): the re-run takes it over.
    """
    redis, settings, job_id = ctx["redis"], ctx["settings"], ctx["job_id"]
    key = mailed_key(day, recipient)
    hold = int(ctx["lease"]) + 1  # a dead attempt's claim frees itself
    if not await redis.set(key, job_id, nx=True, ex=hold):
        if await redis.get(key) != job_id.encode():
            return 0  # sent already, or being sent by a job that will retry until it is
        await redis.expire(key, hold)

    async def remember_sent() -> None:
        await redis.set(key, SENT, ex=sent_for(settings))

    try:
        await send_mail(ctx, to=recipient, subject=subject, body=body, on_accepted=remember_sent)
    except BaseException:
        if await redis.get(key) == job_id.encode():
            await redis.delete(key)  # not sent: a later run may send it
        raise
    return 1


async def _resend(ctx: MailContext, day: date, recipient: str, subject: str, body: str) -> int:
    """Send again, as asked, once per job; the day's record says sent afterwards. 1 if sent."""
    redis, settings = ctx["redis"], ctx["settings"]
    marker = job_key("sent", ctx["job_id"], recipient)
    if await redis.exists(marker):
        return 0

    async def remember_sent() -> None:
        await redis.set(marker, SENT, ex=settings.job_result_ttl)
        await redis.set(mailed_key(day, recipient), SENT, ex=sent_for(settings))

    await send_mail(ctx, to=recipient, subject=subject, body=body, on_accepted=remember_sent)
    return 1
