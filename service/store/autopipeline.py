"""Auto-pipelining: the Redis commands concurrent jobs issue in one loop tick share a round trip.

A worker runs dozens of jobs at once, and each job's bookkeeping is a few small commands or
pipelines (tracking, "sent" markers, stats, arq's own finish). Sent one by one, every call is
a round trip, and on a loaded or virtualised host a round trip costs far more than the command
(the other process must wake up). Here a call does not go out at once: it joins a batch that
is sent as one pipeline once the tasks that are ready to run have had their turn; calls made
while two batches are in flight on the client's connection wait for the next one (group
commit: service.store.batcher). At low load a call therefore leaves on the next loop
iteration, as before; under load, one round trip carries many jobs.

Each call still gets its own replies and its own errors, in order. What it gives up is only
what a plain pipeline gives up too: other clients' commands may run between two commands of
one call. Commands that block (BLPOP), hold connection state (WATCH/MULTI, pub/sub) and
transactional pipelines bypass the batch. Consecutive calls of one of our scripts in a batch go
as one call (service.store.script_merge).

Writes that must be on replicas before they are promised (REDIS_MIN_REPLICAS_ACK: the web's
enqueues) go through :meth:`AutoPipelineRedis.confirmed_pipeline`: such calls form batches of
their own, each sent with one WAIT at its end. WAIT covers the writes made on its connection,
and a batch is one pipeline on one connection, so one WAIT confirms every call in the batch;
the other calls never queue behind a WAIT that replicas are slow to answer.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

from arq.connections import ArqRedis
from redis.asyncio.client import Pipeline
from redis.exceptions import RedisError, ResponseError

from service.store.batcher import Batcher

# commands that must have a connection to themselves, or wait on the server
DIRECT_COMMANDS = frozenset(
    {
        "BLPOP", "BRPOP", "BLMOVE", "BRPOPLPUSH", "BZPOPMIN", "BZPOPMAX", "BLMPOP",
        "BZMPOP", "WAIT", "WATCH", "UNWATCH", "MULTI", "EXEC", "DISCARD", "SUBSCRIBE",
        "PSUBSCRIBE", "MONITOR", "SELECT", "CLIENT SETNAME", "XREAD", "XREADGROUP",
    }
)  # fmt: skip


@dataclass(frozen=True, slots=True)
class ReplicaAck:
    """How many replicas must confirm a write (Redis's WAIT), and how long to wait for them."""

    replicas: int
    timeout_ms: int

    def wait_command(self) -> tuple[Any, ...]:
        return ("WAIT", self.replicas, self.timeout_ms)


class ReplicasBehindError(RedisError):
    """Fewer replicas than REDIS_MIN_REPLICAS_ACK confirmed a write in time; the write may
    still be on the master (and survive), or be lost in a failover: nothing is promised."""


class AutoPipeline(Pipeline):
    """A pipeline whose ``execute`` joins the client's batch (transactions go on their own)."""

    batcher: Batcher | None = None

    async def execute(self, raise_on_error: bool = True) -> list[Any]:
        if (
            self.batcher is None
            or self.is_transaction
            or self.explicit_transaction
            or self.watching
            or self.scripts
        ):
            return await super().execute(raise_on_error)
        commands, self.command_stack = self.command_stack, []
        await self.reset()  # type: ignore[no-untyped-call]
        if not commands:
            return []
        replies = await self.batcher.run(commands)
        if raise_on_error:
            self.raise_first_error(commands, replies)
        return replies


class ConfirmedPipeline(AutoPipeline):
    """A pipeline whose ``execute`` returns once enough replicas hold its writes."""

    confirm: ReplicaAck

    async def execute(self, raise_on_error: bool = True) -> list[Any]:
        commands, self.command_stack = self.command_stack, []
        await self.reset()  # type: ignore[no-untyped-call]
        if not commands:
            return []
        assert self.batcher is not None
        *replies, acked = await self.batcher.run(commands)
        if raise_on_error:
            self.raise_first_error(commands, replies)
        if isinstance(acked, Exception):  # WAIT refused (e.g. sent to a replica)
            raise acked
        if acked < self.confirm.replicas:
            raise ReplicasBehindError(
                f"{acked} of the {self.confirm.replicas} Redis replicas required confirmed "
                f"the write within {self.confirm.timeout_ms} ms"
            )
        return replies


class AutoPipelineRedis(ArqRedis):
    """arq's client with auto-pipelining (see the module docstring)."""

    # set for the web's client when REDIS_MIN_REPLICAS_ACK is above 0
    replica_ack: ReplicaAck | None = None

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._batcher = Batcher(self)
        self._confirmed_batcher: Batcher | None = None

    def confirmed_pipeline(self) -> Pipeline:
        """A non-transactional pipeline that returns only once ``replica_ack.replicas``
        replicas hold its writes, else raises :class:`ReplicasBehindError`; without
        ``replica_ack``, a plain auto-pipelined one."""
        if self.replica_ack is None:
            return self.pipeline(transaction=False)
        if self._confirmed_batcher is None:
            self._confirmed_batcher = Batcher(self, self.replica_ack.wait_command())
        pipe = ConfirmedPipeline(self.connection_pool, self.response_callbacks, False, None)
        pipe.batcher = self._confirmed_batcher
        pipe.confirm = self.replica_ack
        return pipe

    async def execute_command(self, *args: Any, **options: Any) -> Any:
        if str(args[0]).upper() in DIRECT_COMMANDS or self.single_connection_client:
            return await super().execute_command(*args, **options)  # type: ignore[no-untyped-call]
        (reply,) = await self._batcher.run([(args, options)])
        if isinstance(reply, ResponseError):
            raise reply
        return reply

    async def run_batched(self, *args: Any) -> Any:
        """:meth:`execute_command` for a command known to join batches (a script call),
        without redis-py's per-command wrapper or the direct-command check: our scripts run
        three times per job. A client on a single connection still sends it directly."""
        if self.single_connection_client:
            return await super().execute_command(*args)  # type: ignore[no-untyped-call]
        (reply,) = await self._batcher.submit([(args, {})])
        if isinstance(reply, ResponseError):
            raise reply
        return reply

    def submit_command(self, *args: Any) -> asyncio.Future[list[Any]] | None:
        """Queue one command in the next batch now, its reply (or its error, as a value) in
        the future's one-item list; None for a command that cannot join a batch."""
        if str(args[0]).upper() in DIRECT_COMMANDS or self.single_connection_client:
            return None
        return self._batcher.submit([(args, {})])

    def pipeline(self, transaction: bool = True, shard_hint: str | None = None) -> Pipeline:
        pipe = AutoPipeline(self.connection_pool, self.response_callbacks, transaction, shard_hint)
        pipe.batcher = self._batcher
        return pipe
