"""Opening the arq Redis pool with the project's JSON serializer."""

from __future__ import annotations

from arq import create_pool
from arq.connections import ArqRedis

from service.serialization import deserialize, serialize
from settings import Settings


async def open_pool(settings: Settings) -> ArqRedis:
    """The one way to get a pool, so enqueuers and workers always agree on the format."""
    return await create_pool(
        settings.redis_settings,
        job_serializer=serialize,
        job_deserializer=deserialize,
        default_queue_name=settings.queue_name,
    )
