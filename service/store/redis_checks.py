"""What the web app and the worker check of their Redis before they start serving.

Two server settings decide whether a queued job can silently disappear, and neither shows
until it does: an eviction policy other than ``noeviction`` lets Redis drop keys, job data
included (arq's job keys carry a TTL, so even the ``volatile-*`` policies take them), once it
reaches ``maxmemory``; and a Redis that keeps neither an append-only file nor RDB snapshots
forgets the whole queue when it restarts. The first stops the start (unless
REDIS_ALLOW_EVICTION says it is meant), the second is a warning (unless REDIS_EPHEMERAL says
it is meant, as for `make dev`'s private Redis). Where CONFIG GET is not allowed (managed
Redis, an ACL user without it), the checks cannot be made: that is logged, and the start goes
on.
"""

from __future__ import annotations

import logging

from redis.asyncio import Redis
from redis.exceptions import RedisError, ResponseError

from service.store.redis import open_pool
from settings import Settings

logger = logging.getLogger("jobservice.redis")

SAFE_POLICY = "noeviction"


class EvictingRedisError(SystemExit):
    """Redis may evict queued jobs: the process exits (status 1), the reason logged."""

    def __init__(self) -> None:
        super().__init__(1)


async def _config(redis: Redis) -> dict[str, str]:
    """maxmemory-policy, appendonly and save: one CONFIG GET each (Redis 6 takes one name)."""
    config: dict[str, str] = {}
    for name in ("maxmemory-policy", "appendonly", "save"):
        config.update(await redis.config_get(name))
    return config


async def check_redis(redis: Redis, settings: Settings, process: str) -> None:
    """Check the Redis behind ``redis`` for ``process`` ("web", "worker"); raises
    :class:`EvictingRedisError` when it may evict keys and REDIS_ALLOW_EVICTION is off.

    Connection errors are the caller's to handle (the web starts without Redis).
    """
    try:
        config = await _config(redis)
    except ResponseError as exc:  # NOPERM, or CONFIG renamed away ("unknown command")
        logger.warning(
            "%s: could not read Redis's configuration (CONFIG GET: %s), so its eviction "
            "policy and persistence were not checked; make sure maxmemory-policy is noeviction",
            process,
            exc,
        )
        return
    policy = config.get("maxmemory-policy", "")
    if policy != SAFE_POLICY:
        if not settings.redis_allow_eviction:
            logger.error(
                "%s: Redis's maxmemory-policy is %r: under memory pressure Redis would "
                "silently drop queued jobs. Set it to noeviction (CONFIG SET maxmemory-policy "
                "noeviction, and in redis.conf), or set REDIS_ALLOW_EVICTION=true to start "
                "anyway; refusing to start",
                process,
                policy,
            )
            raise EvictingRedisError
        logger.warning(
            "%s: Redis's maxmemory-policy is %r and REDIS_ALLOW_EVICTION is on: queued jobs "
            "may be dropped under memory pressure",
            process,
            policy,
        )
    saves = config.get("save", "").strip()
    if config.get("appendonly") == "no" and not saves and not settings.redis_ephemeral:
        logger.warning(
            "%s: Redis persists nothing (appendonly no, no save points): a restart of Redis "
            "loses every queued job; turn on appendonly (README, Reliability), or set "
            "REDIS_EPHEMERAL=true if that is meant",
            process,
        )


async def check_redis_at_start(settings: Settings) -> None:
    """The web app's check, made once before it serves (before any fork under gunicorn).

    The web app starts while Redis is down and answers 503 until it is back, so a Redis that
    does not answer now is logged as not checked, not as a reason to stop; the worker, which
    waits for Redis as it starts, always makes the check.
    """
    redis = await open_pool(settings)
    try:
        await check_redis(redis, settings, "web")
    except (RedisError, OSError) as exc:
        logger.warning(
            "web: Redis did not answer at start (%s): its eviction policy and persistence "
            "were not checked (the worker checks them as it starts)",
            exc,
        )
    finally:
        await redis.aclose(close_connection_pool=True)
