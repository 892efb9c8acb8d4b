"""``POST /jobs/{id}/replay``: send a finished replayable job (a webhook) again, as a new job.

The replay gets a new id, so the receiver sees a new ``Idempotency-Key`` and ``webhook-id``
and does not drop it as a repeat: it is a deliberate second delivery. The link is written
before the job is queued, so a worker never runs a replay that does not name its original.
"""

from __future__ import annotations

import uuid
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from typing import Any

from arq.connections import ArqRedis

from service.engine.queues import DEFAULT_QUEUE, NORMAL, Priority
from service.queue.enqueue import enqueue
from service.records import replays
from service.records.search_index import SearchIndex


class NotReplayableError(Exception):
    """The job exists but cannot be replayed; the message says why, for the client."""


def _refusal(found: replays.Original, replayable: Collection[str]) -> str | None:
    if found.outcome not in replays.FINISHED:  # a queued job has no tracking hash yet
        return "this job has not finished yet: replay it once it has been delivered"
    if found.function not in replayable:
        kinds = ", ".join(sorted(replayable)) or "none"
        return f"only these jobs can be replayed: {kinds} (this one is {found.function})"
    if found.kwargs is None:
        return (
            "this job's arguments were larger than REPLAY_MAX_ARGUMENT_BYTES, so none were"
            " kept: queue it again with its full arguments"
        )
    return None


@dataclass(frozen=True, slots=True)
class Replay:
    """What a replay of ``original_id`` will queue; ``size``: its arguments' bytes, which the
    web app counts against the token's payload quota before queueing."""

    original_id: str
    function: str
    kwargs: dict[str, Any]
    size: int


async def prepare(redis: ArqRedis, job_id: str, *, replayable: Collection[str]) -> Replay:
    """What replaying ``job_id`` would queue; NotReplayableError when it is of another kind,
    not finished, or kept nothing."""
    found = await replays.original(redis, job_id)
    refusal = _refusal(found, replayable)
    function, kwargs = found.function, found.kwargs
    if refusal is not None or function is None or kwargs is None:  # _refusal checks all three
        raise NotReplayableError(refusal or "nothing was kept to replay")
    return Replay(job_id, function, kwargs, found.size)


async def queue_replay(
    redis: ArqRedis,
    replay: Replay,
    *,
    ttl: int,
    index: SearchIndex | None = None,
    search_keys: Sequence[str] = (),
    queue: str = DEFAULT_QUEUE,
    priority: Priority = NORMAL,
) -> str:
    """Queue ``replay`` under a new id, linked to its original first; that id. With ``index``
    job search finds it as it finds any queued job (by ``search_keys`` too); it waits in
    ``queue`` at ``priority`` (its declaration's)."""
    new_id = uuid.uuid4().hex
    await replays.link(redis, replay.original_id, new_id, ttl=ttl)
    return await enqueue(
        redis,
        replay.function,
        replay.kwargs,
        job_id=new_id,
        index=index,
        search_keys=search_keys,
        queue=queue,
        priority=priority,
    )
