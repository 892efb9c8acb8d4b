"""Mailing the daily report: one message to each of REPORT_RECIPIENTS, once per report.

One message per recipient rather than one with several envelope recipients: each address is
sent to, accepted and recorded on its own, so a recipient the server defers or refuses
delays or fails only its own copy, and a re-run (a retry, or a worker that died mid-way)
sends only to the recipients that have no "sent" record yet. Recipients do not see each
other's addresses. Every copy carries the job's Message-ID: it is one report.
"""

from __future__ import annotations

import json
from typing import Any

from jobs.mail import MailContext, send_mail
from service.runtime import PermanentError, TransientError, job_key


async def mail_report(ctx: MailContext, report: dict[str, Any]) -> str:
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
    for recipient in settings.report_recipients:
        try:
            await _mail_once(ctx, recipient, subject, body)
        except TransientError as exc:
            deferred.append(f"{recipient}: {exc.reason}")
        except PermanentError as exc:
            refused.append(f"{recipient}: {exc}")
    if deferred:
        raise TransientError("report not mailed yet to " + "; ".join(deferred + refused))
    if refused:
        raise PermanentError("report not mailed to " + "; ".join(refused))
    return "mailed"


async def _mail_once(ctx: MailContext, recipient: str, subject: str, body: str) -> None:
    redis, settings = ctx["redis"], ctx["settings"]
    marker = job_key("sent", ctx["job_id"], recipient)
    if await redis.exists(marker):
        return

    async def remember_sent() -> None:
        await redis.set(marker, "1", ex=settings.job_result_ttl)

    await send_mail(ctx, to=recipient, subject=subject, body=body, on_accepted=remember_sent)
