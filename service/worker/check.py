"""``arq service.WorkerSettings --check``: is a worker alive? Answered within seconds.

arq's check reads the workers' health key through a pool built from the worker's own Redis
settings, so with Redis down it inherited the worker's patience: arq's five connection
retries, each through the worker's retry policy (about 15 minutes). A health check must
answer before its runner gives up on it (a container's is 30 s by default, often set to 10):
here the same read gets one connection attempt without retries, and the whole check at most
CHECK_WITHIN seconds. Exit status 0: a worker wrote its health line in the last
health-check interval; 1: none did, or Redis refused, failed or did not answer in time.

With REDIS_SENTINELS the read goes through the service's own Sentinel pool (the one the web
app and the worker use), not arq's: arq's ``create_pool`` gives the sentinels neither their
own password (REDIS_SENTINEL_PASSWORD) nor REDIS_URL's TLS, so against the reference
deployment's sentinels (deploy/env/common.env) its check could never find the master.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import replace
from typing import Any

from redis.asyncio import Redis
from redis.exceptions import RedisError

from service.engine.arq_api import async_check_health, health_check_key_suffix, use_health_check
from service.store.redis import new_client

logger = logging.getLogger("arq.worker")  # where arq's own check writes its verdict

CHECK_WITHIN = 5.0  # seconds for the whole check; Python's start-up comes on top (~1 s)
CONNECT_WITHIN = 2  # seconds for the one connection attempt (arq's conn_timeout)


async def _check_through_sentinels(redis_settings: Any, health_key: str) -> int:
    """arq's check (the same key, verdicts and log lines), through the service's Sentinel pool."""
    timeouts = {"socket_connect_timeout": CONNECT_WITHIN, "socket_timeout": CONNECT_WITHIN}
    client: Redis = new_client(Redis, redis_settings, timeouts)
    try:
        data = await client.get(health_key)
    finally:
        await client.aclose()
    if not data:
        logger.warning("Health check failed: no health check sentinel value found")
        return 1
    logger.info("Health check successful: %s", data)
    return 0


async def _check(settings_cls: Any) -> int:
    redis_settings = settings_cls.redis_settings
    once = replace(
        redis_settings,
        conn_timeout=CONNECT_WITHIN,
        conn_retries=0,
        retry=None,
        retry_on_error=None,
        retry_on_timeout=False,
    )
    health_key = getattr(settings_cls, "health_check_key", None)
    queue_name = getattr(settings_cls, "queue_name", None)
    if getattr(once, "sentinel", False):
        checked = _check_through_sentinels(
            once, health_key or f"{queue_name}{health_check_key_suffix}"
        )
    else:
        checked = async_check_health(once, health_key, queue_name)
    try:
        return await asyncio.wait_for(checked, CHECK_WITHIN)
    except TimeoutError:
        logger.warning("Health check failed: Redis did not answer within %g s", CHECK_WITHIN)
    except (RedisError, OSError) as exc:
        logger.warning("Health check failed: Redis unreachable (%s: %s)", type(exc).__name__, exc)
    return 1


def check_health(settings_cls: Any) -> int:
    """What ``arq ... --check`` runs: the exit status, as arq's own check_health returns it."""
    return asyncio.run(_check(settings_cls))


def install() -> None:
    """Make arq's CLI run :func:`check_health` for ``--check``."""
    use_health_check(check_health)
