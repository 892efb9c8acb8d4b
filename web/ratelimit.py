"""Rate limits kept in Redis, so they hold across every web process sharing it.

Two kinds: per API token (every authenticated request) and per recipient address (every
request that makes the service send email to someone, registration included), so a leaked
token can neither flood the queue nor mail-bomb a stranger. Both are windows that slide, so
a burst at a window's edge cannot double the rate: per token a sliding-window *counter* (two
counters a key, whatever the limit, as token limits are large), per recipient an exact moving
window (one entry per email; those limits are small, and ``Retry-After`` is exact).

A third, per token too, counts bytes instead of requests: the request bodies that queued jobs
(PAYLOAD_QUOTA_PER_TOKEN per PAYLOAD_QUOTA_WINDOW seconds), what the token's jobs make Redis
hold, so one token cannot fill Redis's memory even within its request limit
(web/payload_quota.py: one script call through the auto-pipelined client).
"""

from __future__ import annotations

import hashlib
import math
import time
from typing import Any

from aiohttp import web
from aiohttp.typedefs import Handler
from limits import RateLimitItem, parse_many
from limits.aio.storage import RedisStorage
from limits.aio.strategies import (
    MovingWindowRateLimiter,
    RateLimiter,
    SlidingWindowCounterRateLimiter,
)
from pydantic import BaseModel
from redis.asyncio import Redis

from service.runtime import Job
from service.runtime.inputs import mail_recipients
from web.auth import TOKEN_ID
from web.errors import ApiError
from web.keys import REDIS, SETTINGS
from web.mailboxes import canonical_mailbox
from web.payload_quota import PayloadQuota, QuotaCheck

KEY_PREFIX = "jobsvc:ratelimit"
# Dashboard sign-in attempts per client address: tokens are long enough not to be guessed,
# this only keeps a script from trying at full speed.
SIGN_IN_LIMIT = "10/minute"


def parse_limits(text: str) -> list[RateLimitItem]:
    """``"100/minute;1000/hour"`` as limit items; an empty string means no limit."""
    return parse_many(text) if text.strip() else []


class RateLimits:
    """Checks the configured limits against counters in the service's Redis."""

    def __init__(
        self,
        redis: Redis,
        per_token: str,
        per_recipient: str,
        payload_quota: tuple[int, int] = (0, 1),
    ) -> None:
        # the service's own connection pool: same password, TLS and database as the queue
        # (limits types its pass-through options as scalars, hence the Any-typed dict)
        shared: dict[str, Any] = {"connection_pool": redis.connection_pool}
        storage = RedisStorage(
            "async+redis://", implementation="redispy", key_prefix=KEY_PREFIX, **shared
        )
        self._token_limiter = SlidingWindowCounterRateLimiter(storage)
        self._recipient_limiter = MovingWindowRateLimiter(storage)
        self._per_token = parse_limits(per_token)
        self._per_recipient = parse_limits(per_recipient)
        self._sign_in = parse_limits(SIGN_IN_LIMIT)
        quota, window = payload_quota  # bytes per window (seconds); 0 bytes: no quota
        self._redis = redis
        self._payload = PayloadQuota(quota, window) if quota else None

    async def check_token(self, token_id: str) -> None:
        """Count one request for the token; 429 when a limit is used up."""
        await _hit(self._token_limiter, self._per_token, "token", token_id)

    @property
    def counts_recipients(self) -> bool:
        """Whether RATE_LIMIT_PER_RECIPIENT is set: a request may then be refused for a
        recipient after its payload was looked at."""
        return bool(self._per_recipient)

    async def check_recipient(self, address: str) -> None:
        """Count one email to ``address``'s mailbox (web.mailboxes: tags and Gmail's dots
        do not make a new one); 429 when a limit is used up."""
        if not self._per_recipient:  # no limit configured: nothing to count, nor to hash
            return
        digest = hashlib.sha256(canonical_mailbox(address).encode()).hexdigest()[:24]
        await _hit(self._recipient_limiter, self._per_recipient, "recipient", digest)

    async def check_payload(self, token_id: str, size: int, *, count: bool = True) -> None:
        """Count ``size`` bytes queued by the token; 429 when its quota would be exceeded.
        With ``count=False`` only look: a request refused later must not use up the quota."""
        if self._payload is None:
            return
        check = self._payload.check(token_id, size, count=count)
        wait = check.wait(await check.call.run(self._redis))
        if wait:
            raise self.payload_refused(check, wait)

    def payload_gate(self, token_id: str, size: int) -> QuotaCheck | None:
        """The count of ``size`` bytes against the token's quota, to go as the gate of the
        enqueue it guards (service.queue.enqueue); None when no quota is set."""
        if self._payload is None:
            return None
        return self._payload.check(token_id, size, count=True)

    def payload_refused(self, check: QuotaCheck, wait: int) -> ApiError:
        """The 429 for bytes that would pass the token's quota for ``wait`` more seconds."""
        quota = check.quota
        return ApiError(
            429,
            f"{check.size} more bytes of job payloads would pass this token's quota"
            f" ({quota.quota} bytes per {quota.window_ms // 1000} s): retry in {wait} s",
            {"Retry-After": str(wait)},
        )

    async def check_sign_in(self, client: str) -> None:
        """Count one dashboard sign-in attempt from ``client``; 429 when too many."""
        await _hit(self._recipient_limiter, self._sign_in, "client", client)


async def _wait(limiter: RateLimiter, item: RateLimitItem, kind: str, who: str) -> int:
    """Whole seconds until the window frees room (at least 1), for ``Retry-After``."""
    stats = await limiter.get_window_stats(item, kind, who)
    return max(1, math.ceil(stats.reset_time - time.time()))


async def _hit(limiter: RateLimiter, items: list[RateLimitItem], kind: str, who: str) -> None:
    for item in items:
        if not await limiter.hit(item, kind, who):
            wait = await _wait(limiter, item, kind, who)
            raise ApiError(
                429,
                f"too many requests for this {kind} (limit: {item}), retry in {wait} s",
                {"Retry-After": str(wait)},
            )


RATE_LIMITS = web.AppKey("rate_limits", RateLimits)


async def check_mail_recipients(app: web.Application, job: Job, job_input: BaseModel) -> None:
    """Count every address a job queued now would mail: its input's MailRecipient fields and
    what its declaration adds (``Job.mails_to``: the daily report's recipients); 429 when one
    is over RATE_LIMIT_PER_RECIPIENT, before anything is queued."""
    addresses = mail_recipients(job_input)
    if job.mails_to is not None:
        addresses += await job.mails_to(app[SETTINGS], app[REDIS], job_input)
    for address in addresses:
        await app[RATE_LIMITS].check_recipient(address)


@web.middleware
async def limit_per_token(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Every request made with a token counts against that token's limits."""
    token_id = request.get(TOKEN_ID)
    if token_id is not None:
        await request.app[RATE_LIMITS].check_token(token_id)
    return await handler(request)
