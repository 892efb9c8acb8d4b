"""Redis clients for the web app and the worker, each with the retry policy its role needs.

The web app must answer quickly, so its client fails fast (short socket timeouts, one retry
to replace a connection that a Redis restart broke) and the API answers 503 until Redis is
back. The worker must ride out a restart, so every Redis command it sends is retried with
backoff until Redis has been away for REDIS_RETRY_SECONDS, then the process exits non-zero
(service.store.outage).
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any, TypeVar

import hiredis
from arq.connections import RedisSettings
from redis.asyncio import Redis
from redis.asyncio.connection import AbstractConnection
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff, NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import DataError
from redis.exceptions import TimeoutError as RedisTimeoutError

from service.store.autopipeline import AutoPipelineRedis, ReplicaAck
from service.store.outage import OutageRetry, RedisOutage
from service.store.sentinel import master_pool
from service.store.serialization import deserialize, serialize
from settings import ServiceRedisSettings, Settings

ClientT = TypeVar("ClientT", bound=Redis)

RETRIED_ERRORS: list[type[Exception]] = [RedisConnectionError, RedisTimeoutError, OSError]
BACKOFF_BASE = 0.05  # seconds; doubles per failure up to BACKOFF_CAP
BACKOFF_CAP = 1.0  # so a worker reconnects about once a second at most through an outage


def connection_options(redis: RedisSettings) -> dict[str, Any]:
    """Where and how to connect (address, login, TLS), as every redis-py client takes it.

    The one translation of arq's RedisSettings for the clients we build ourselves (the web
    pool, the worker's waking pool, `make dev`'s check), so a TLS or login option reaches all.
    A direct connection only: with sentinels, :func:`new_client` builds the pool.
    """
    return {
        "host": redis.host,
        "port": redis.port,
        "unix_socket_path": redis.unix_socket_path,
        "db": redis.database,
        "username": redis.username,
        "password": redis.password,
        "ssl": redis.ssl,
        "ssl_keyfile": redis.ssl_keyfile,
        "ssl_certfile": redis.ssl_certfile,
        "ssl_cert_reqs": redis.ssl_cert_reqs,
        "ssl_ca_certs": redis.ssl_ca_certs,
        "ssl_ca_data": redis.ssl_ca_data,
        "ssl_check_hostname": redis.ssl_check_hostname,
    }


class _HiredisPacking(AbstractConnection):
    """Commands encoded by hiredis (C) instead of redis-py's asyncio code, which is pure
    Python and, with a dozen small commands per job, the worker's largest single cost."""

    def pack_command(self, *args: Any) -> list[bytes]:
        if isinstance(args[0], str):  # "CONFIG GET" and the like: one word per argument
            args = (*args[0].encode().split(), *args[1:])
        elif b" " in args[0]:
            args = (*args[0].split(), *args[1:])
        try:
            return [hiredis.pack_command(args)]
        except TypeError as exc:  # as redis-py reports an argument it cannot send
            raise DataError(str(exc)) from exc


def pack_with_hiredis(client: Redis) -> None:
    """Make ``client``'s future connections encode commands with hiredis (same bytes on the
    wire for the str, bytes, int and float arguments this service sends)."""
    pool = client.connection_pool
    base = pool.connection_class
    if not issubclass(base, _HiredisPacking):
        pool.connection_class = type(f"Hiredis{base.__name__}", (_HiredisPacking, base), {})


def new_client(
    client_class: type[ClientT],
    redis: ServiceRedisSettings,
    connection: dict[str, Any],
    **client: Any,
) -> ClientT:
    """A client of ``client_class``: connected to REDIS_URL's server, or with REDIS_SENTINELS
    to whichever server the sentinels name master (service.store.sentinel); commands packed
    by hiredis either way.

    ``connection`` holds the connections' options (timeouts, retry policy, pool size),
    ``client`` the client's own (arq's serializers, the queue's name).
    """
    if redis.sentinel:
        pool = master_pool(redis, redis.sentinel_password, **connection)
        made = client_class(connection_pool=pool, **client)
        made.auto_close_connection_pool = True  # it owns its pool, as a direct client does
    else:
        made = client_class(**connection_options(redis), **connection, **client)
    pack_with_hiredis(made)
    return made


def worker_redis_settings(settings: Settings) -> ServiceRedisSettings:
    """arq's connection settings for the worker: every command retried through a restart,
    with backoff, until Redis has been away for REDIS_RETRY_SECONDS (service.store.outage)."""
    outage = RedisOutage(settings.redis_retry_seconds)
    return replace(
        settings.redis_settings,
        retry_on_timeout=True,
        retry_on_error=list(RETRIED_ERRORS),  # a copy: redis-py appends to the list it gets
        retry=OutageRetry(outage, ExponentialBackoff(cap=BACKOFF_CAP, base=BACKOFF_BASE)),
    )


async def open_pool(settings: Settings) -> AutoPipelineRedis:
    """The web app's pool: fails fast, never blocks a request for long, reconnects by itself.
    Auto-pipelined (service.store.autopipeline): concurrent requests' commands share round trips;
    with REDIS_MIN_REPLICAS_ACK, enqueues return once that many replicas hold them.

    Built like arq's ``create_pool`` from the same RedisSettings (so TLS and passwords come
    from one place) plus a socket timeout, which ``create_pool`` cannot set. It does not ping:
    the app starts while Redis is down and answers 503 until it is back.
    """
    redis = settings.redis_settings
    connection = {
        "socket_connect_timeout": min(redis.conn_timeout, settings.redis_socket_timeout),
        "socket_timeout": settings.redis_socket_timeout,
        "retry_on_error": list(RETRIED_ERRORS),
        "retry": Retry(NoBackoff(), 1),
        "max_connections": redis.max_connections,
        "encoding": "utf8",
    }
    pool = new_client(
        AutoPipelineRedis,
        redis,
        connection,
        job_serializer=serialize,
        job_deserializer=deserialize,
        default_queue_name=settings.queue_name,
    )
    if settings.redis_min_replicas_ack:
        pool.replica_ack = ReplicaAck(
            settings.redis_min_replicas_ack, settings.redis_replica_ack_timeout
        )
    return pool
