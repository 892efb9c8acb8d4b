"""Client idempotency keys: the same key gives the same job, however often a request is sent.

The first request with a key claims it with ``SET NX`` and a placeholder that names its owner,
so of two requests racing with one key exactly one runs; the other waits for the owner's
answer and replays it. It waits on a notification rather than asking Redis again and again:
the owner publishes on the key's channel in the same script that stores its answer or frees
the key, and the waiter listens through the process's shared subscription
(service.store.subscriptions), so waiting costs neither commands nor a connection. The owner
stores what it answered (the task id and the small JSON body, plus a fingerprint of the
request) for ``IDEMPOTENCY_TTL`` seconds, or frees the key when it refused the request, so a
corrected request may use the same key. The fingerprint lets the caller refuse a key sent
again with a different request.
"""

from __future__ import annotations

import hashlib
import json
import time
import uuid
from dataclasses import dataclass
from typing import Any

from redis.asyncio import Redis

from service.store import keys
from service.store.scripts import LuaScript
from service.store.subscriptions import SharedSubscriptions

# A placeholder outlives a stuck owner by this long at most, then the key is free again.
PENDING_TTL_MS = 120_000
# A waiter also looks again this often, in case a notice is lost (a reconnect) or its owner's
# placeholder lapsed without one.
RECHECK_SECONDS = 1.0

# Store only over our own placeholder (or a lapsed one): never over another owner's claim.
# ARGV[4] is the key's channel: waiters hear that the key is settled.
_COMPLETE = LuaScript(
    """
local current = redis.call('get', KEYS[1])
if current and current ~= ARGV[1] then return 0 end
redis.call('set', KEYS[1], ARGV[2], 'EX', ARGV[3])
redis.call('publish', ARGV[4], '1')
return 1
"""
)
_RELEASE = LuaScript(
    """
if redis.call('get', KEYS[1]) == ARGV[1] then
  redis.call('del', KEYS[1])
  redis.call('publish', ARGV[2], '1')
  return 1
end
return 0
"""
)


@dataclass(frozen=True, slots=True)
class StoredAnswer:
    """What the first request with a key answered."""

    fingerprint: str
    task_id: str
    status: int
    body: dict[str, Any]


class KeyInUseError(Exception):
    """Another request with the same key is still running after the wait."""


class _InUse:
    """Another request holds the key and has not answered yet."""


_IN_USE = _InUse()


def key_digest(client_key: str) -> str:
    """Keys are hashed, so what a client sends never becomes a Redis key as such."""
    return hashlib.sha256(client_key.encode()).hexdigest()


class IdempotencyKey:
    """One request's hold on a client key, scoped to the caller (its API token)."""

    def __init__(
        self, redis: Redis, notices: SharedSubscriptions, scope: str, client_key: str
    ) -> None:
        self.redis = redis
        self.notices = notices
        self.key = keys.idempotency(scope, key_digest(client_key))
        self.channel = f"{self.key}:settled"
        self.placeholder = json.dumps({"pending": uuid.uuid4().hex})

    async def claim(self, *, wait: float) -> StoredAnswer | None:
        """None when this request now owns the key; else the stored answer of the request
        that used it first (waiting up to ``wait`` seconds for one still running)."""
        found = await self._try()
        if not isinstance(found, _InUse):
            return found
        deadline = time.monotonic() + wait
        # listening before looking again: a notice sent after that look cannot be missed
        async with self.notices.listen(self.channel, capacity=1, confirm_within=wait) as settled:
            while True:
                settled.clear()  # what comes from now on is news to the look below
                found = await self._try()
                if not isinstance(found, _InUse):
                    return found
                left = deadline - time.monotonic()
                if left <= 0:
                    raise KeyInUseError(self.key)
                await settled.get(min(left, RECHECK_SECONDS))

    async def _try(self) -> StoredAnswer | _InUse | None:
        """Claim the key (None), or the answer stored under it, or _IN_USE."""
        while True:
            if await self.redis.set(self.key, self.placeholder, nx=True, px=PENDING_TTL_MS):
                return None
            raw = await self.redis.get(self.key)
            if raw is None:
                continue  # freed between the two commands: claim it
            return _parse(raw) or _IN_USE

    async def complete(self, answer: StoredAnswer, *, ttl: int) -> None:
        """Keep ``answer`` for ``ttl`` seconds: requests with this key now replay it."""
        record = json.dumps(
            {
                "fingerprint": answer.fingerprint,
                "task_id": answer.task_id,
                "status": answer.status,
                "body": answer.body,
            },
            separators=(",", ":"),
        )
        await _COMPLETE.run(self.redis, [self.key], [self.placeholder, record, ttl, self.channel])

    async def release(self) -> None:
        """Free the key (the request was refused or failed), if this request still holds it."""
        await _RELEASE.run(self.redis, [self.key], [self.placeholder, self.channel])


def _parse(raw: bytes) -> StoredAnswer | None:
    """The stored answer, or None for a placeholder (or anything unreadable)."""
    try:
        data = json.loads(raw)
        return StoredAnswer(
            fingerprint=str(data["fingerprint"]),
            task_id=str(data["task_id"]),
            status=int(data["status"]),
            body=dict(data["body"]),
        )
    except (ValueError, KeyError, TypeError):
        return None
