"""The welcome email on registration: reads the user by id, sends once per user."""

from __future__ import annotations

from typing import Annotated

from pydantic import Field

from jobs.mail import EMAIL_RATE, MailContext, send_mail, smtp_breaker
from service.runtime import Job, JobInput, PermanentError, TransientError, job_key


class SendWelcomeEmail(JobInput):
    user_id: Annotated[int, Field(ge=1)]


async def send_welcome_email(ctx: MailContext, *, user_id: int) -> dict[str, str]:
    """Send "Welcome {name}!" to a registered user, unless they already got it.

    A Redis lock keeps two jobs for the same user from sending at once; a Redis marker
    written the moment the server accepts the message, then the database's
    ``welcome_sent_at`` (both checked under the lock) keep later ones from sending again.
    A lock that already holds this job's own id was left by an attempt of this job whose
    worker died (arq runs one attempt of a job at a time): the re-run takes it over instead
    of waiting for it to expire.
    """
    db, redis, settings = ctx["db"], ctx["redis"], ctx["settings"]
    lock = job_key("lock", "welcome", user_id)
    # held at most as long as an attempt can hold the job, so a dead attempt's lock frees itself
    lock_ttl = int(ctx["lease"]) + 1
    if not await redis.set(lock, ctx["job_id"], nx=True, ex=lock_ttl):
        if await redis.get(lock) != ctx["job_id"].encode():
            raise TransientError(
                "another job is sending this user's welcome email", destination_fault=False
            )
        await redis.expire(lock, lock_ttl)
    try:
        user = await db.get_user(user_id)
        if user is None:
            raise PermanentError(f"user {user_id} does not exist")
        sent = job_key("welcomed", user_id)
        if user.welcome_sent_at is not None or await redis.exists(sent):
            await db.mark_welcome_sent(user_id)  # a no-op unless a dead attempt missed it
            return {"to": user.email, "status": "already sent"}

        async def remember_sent() -> None:
            # one fast Redis write the moment the server accepts; the database follows
            await redis.set(sent, "1", ex=settings.job_result_ttl)

        message_id = await send_mail(
            ctx,
            to=user.email,
            subject=f"Welcome {user.name}!",
            body=f"Hi {user.name},\n\nthanks for registering. We are glad to have you.\n",
            on_accepted=remember_sent,
        )
        await db.mark_welcome_sent(user_id)
    finally:
        if await redis.get(lock) == ctx["job_id"].encode():
            await redis.delete(lock)
    return {"to": user.email, "message_id": message_id, "status": "sent"}


# Queued by POST /register only: the user must exist, and their address counts against
# RATE_LIMIT_PER_RECIPIENT there.
JOB = Job(
    name="send_welcome_email",
    run=send_welcome_email,
    input=SendWelcomeEmail,
    time_limit=lambda settings: settings.email_job_timeout,
    rate=EMAIL_RATE,
    search_keys=lambda job: [f"user:{job.user_id}"],
    destination=smtp_breaker,
)
