"""Finding the Redis master through Sentinel, and following it after a failover.

With REDIS_SENTINELS set, no client of the service connects to a fixed address: every new
connection first asks the sentinels which server is the master now. Under the service's own
client classes (auto-pipelining, hiredis packing) sits redis-py's ``SentinelConnectionPool``,
so a failover costs only the connections to the old master: they fail, and the client's retry
policy reconnects, to the new master once the sentinels name it (the web's policy tries once
more and answers 503; the worker's backs off for about REDIS_RETRY_SECONDS). A master that was
demoted rather than killed answers writes with READONLY, which redis-py turns into a reconnect.

A master that is still up when the sentinels replace it (SENTINEL FAILOVER, a network
partition) keeps accepting writes for about ten seconds, until Sentinel turns it into a
replica, which then discards them. So the pool asks the sentinels again at most every
MASTER_CHECK_INTERVAL as it hands out connections, and once the master has moved it closes
the connections to the former one (idle ones at once, busy ones as they come back).

redis-py's own connection class is not used as it is: it wraps each connect in the client's
retry policy and, inside that, connects to the address it was given with the same policy again,
so the worker's ~30 s of retries would all go to the dead master before the sentinels were
asked again (redis/redis-py#3560). Here each connection attempt asks them first.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

from arq.connections import RedisSettings
from redis.asyncio.connection import AbstractConnection, SSLConnection
from redis.asyncio.sentinel import Sentinel, SentinelConnectionPool, SentinelManagedConnection
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

MASTER_CHECK_INTERVAL = 1.0  # seconds between two questions to the sentinels, at most

# what the connections to the sentinels take from the data connections' options
SENTINEL_OPTIONS = ("socket_timeout", "socket_connect_timeout")
TLS_OPTIONS = (
    "ssl_keyfile",
    "ssl_certfile",
    "ssl_cert_reqs",
    "ssl_ca_certs",
    "ssl_ca_data",
    "ssl_check_hostname",
)


class MasterConnection(SentinelManagedConnection):
    """A connection to whichever server the sentinels name master when it connects."""

    async def connect(self) -> None:
        # one attempt per call of the client's retry policy (see the module docstring)
        await AbstractConnection.connect(self)  # type: ignore[no-untyped-call]

    async def _connect(self) -> None:
        self.host, self.port = await self.connection_pool.get_master_address()
        await super()._connect()  # type: ignore[no-untyped-call]


class MasterTLSConnection(MasterConnection, SSLConnection):
    """The same over TLS (``rediss://``)."""


class MasterPool(SentinelConnectionPool):
    """redis-py's Sentinel pool that notices a master replaced while still up (see the module
    docstring); closing it also closes the connections to the sentinels."""

    sentinel_manager: Sentinel
    _next_check = 0.0

    async def get_connection(self, *_: Any, **__: Any) -> Any:  # redis-py ignores its arguments
        now = asyncio.get_running_loop().time()
        if now >= self._next_check:
            self._next_check = now + MASTER_CHECK_INTERVAL
            # a new address closes the idle connections (redis-py's get_master_address); with
            # no answer (sentinels unreachable, or the master down) the connections stay
            with contextlib.suppress(RedisConnectionError, RedisTimeoutError):
                await self.get_master_address()  # type: ignore[no-untyped-call]
        return await super().get_connection()

    async def release(self, connection: AbstractConnection) -> None:
        if self.master_address is not None and self.master_address != (
            getattr(connection, "host", None),
            getattr(connection, "port", None),
        ):
            await connection.disconnect()  # it served a former master: the next use reconnects
        await super().release(connection)

    async def disconnect(self, inuse_connections: bool = True) -> None:
        await super().disconnect(inuse_connections)
        if inuse_connections:  # the client closes (the master moving only drops idle ones)
            for sentinel in self.sentinel_manager.sentinels:
                await sentinel.aclose(close_connection_pool=True)


def tls_options(redis: RedisSettings) -> dict[str, Any]:
    """REDIS_URL's TLS options (``rediss://`` and the REDIS_TLS_* files), for redis-py."""
    if not redis.ssl:
        return {}
    return {"ssl": True, **{name: getattr(redis, name) for name in TLS_OPTIONS}}


def master_pool(redis: RedisSettings, sentinel_password: str | None, **options: Any) -> MasterPool:
    """A pool of connections to the master of ``redis.sentinel_master``, found through the
    sentinels in ``redis.host``; ``options`` are the data connections' (timeouts, retries).

    The database, the login and TLS come from REDIS_URL; TLS applies to the sentinels too,
    the sentinels' password is their own (REDIS_SENTINEL_PASSWORD).
    """
    assert isinstance(redis.host, list), "REDIS_SENTINELS names no sentinel"
    tls = tls_options(redis)
    if options.get("retry_on_error") is not None:  # a copy: each connection appends to it
        options["retry_on_error"] = list(options["retry_on_error"])
    sentinels = Sentinel(  # type: ignore[no-untyped-call]
        redis.host,
        sentinel_kwargs={
            **{name: options[name] for name in SENTINEL_OPTIONS if name in options},
            **tls,
            "password": sentinel_password,
        },
    )
    return MasterPool(  # type: ignore[no-untyped-call]
        redis.sentinel_master,
        sentinels,
        connection_class=MasterTLSConnection if tls else MasterConnection,
        db=redis.database,
        username=redis.username,
        password=redis.password,
        **{name: value for name, value in tls.items() if name != "ssl"},
        **options,
    )
