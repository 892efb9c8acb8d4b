"""A Redis master, its replica(s) and three sentinels on loopback (or on a test host's own
address in a network namespace: tests/netns.py), each a real process.

Sentinel's own timings are shortened (a master is down after DOWN_AFTER_MS without an answer)
so that a failover takes seconds. Every process is killed by its own pid in :meth:`stop`,
which the fixtures call whatever the test's outcome.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from redis.asyncio import Redis
from redis.exceptions import RedisError

from tests.conftest import free_port
from tests.faults.processes import Process, RedisServer
from tests.waiting import wait_until

MASTER_NAME = "jobs"
# Sentinel's default is 30 s. At 1 s, a loaded 2-core machine sometimes kept a new master from
# answering a sentinel in time, and the sentinels failed over a second time.
DOWN_AFTER_MS = 2000
QUORUM = 2
SENTINELS = 3
READY = 30  # seconds the group may take to find itself (sentinels say hello every 2 s)


def _client(port: int, host: str, password: str | None = None) -> Redis:
    return Redis(
        host=host,
        port=port,
        password=password,
        socket_connect_timeout=1,
        socket_timeout=2,
        decode_responses=True,
    )


async def _answers(port: int, host: str, password: str | None) -> bool:
    client = _client(port, host, password)
    try:
        return bool(await client.ping())
    except (RedisError, OSError):
        return False
    finally:
        await client.aclose()


class SentinelGroup:
    """``replicas`` replicas of a master, watched by three sentinels (quorum two), all
    listening on ``host``. With ``password``, the master and replicas require it (and the
    sentinels know it); with ``sentinel_password``, the sentinels require theirs."""

    def __init__(
        self,
        binary: str,
        folder: Path,
        replicas: int = 1,
        host: str = "127.0.0.1",
        password: str | None = None,
        sentinel_password: str | None = None,
    ) -> None:
        self.binary = binary
        self.folder = folder
        self.host = host
        self.password = password
        self.sentinel_password = sentinel_password
        # persistence as in production (AOF), fsync once a second: a failover, not a restart,
        # is what these tests are about; a replica's first sync starts at once, not after
        # Redis's default 5 s wait for more replicas to share it
        options = ("--appendfsync", "everysec", "--repl-diskless-sync-delay", "0")
        self.master = RedisServer(
            binary, free_port(host), folder / "master", *options, host=host, password=password
        )
        self.options = options
        follow = ("--replicaof", host, str(self.master.port))
        self.replicas = [
            RedisServer(
                binary,
                free_port(host),
                folder / f"replica{n}",
                *options,
                *follow,
                host=host,
                password=password,
            )
            for n in range(1, replicas + 1)
        ]
        self.sentinel_ports = [free_port(host) for _ in range(SENTINELS)]
        self.sentinels: list[Process] = []
        self.servers = [self.master, *self.replicas]

    @property
    def addresses(self) -> tuple[str, ...]:
        """REDIS_SENTINELS."""
        return tuple(f"{self.host}:{port}" for port in self.sentinel_ports)

    def sentinel(self, n: int = 0) -> Redis:
        return _client(self.sentinel_ports[n], self.host, self.sentinel_password)

    async def start(self) -> None:
        """Start every process, then wait until the replicas hold the master's data and each
        sentinel knows them and the other sentinels (only then can two of them agree that
        the master is down)."""
        for server in self.servers:
            await server.start()
        for port in self.sentinel_ports:
            await self._start_sentinel(port)
        await wait_until(self._ready, within=READY, interval=0.1)

    async def _start_sentinel(self, port: int) -> None:
        folder = self.folder / f"sentinel{port}"
        config = folder / "sentinel.conf"  # Sentinel rewrites it: one file each
        lines = [
            f"port {port}",
            f"bind {self.host}",
            f"protected-mode {'yes' if self.host == '127.0.0.1' else 'no'}",  # as RedisServer
            f"dir {folder}",
            f"sentinel monitor {MASTER_NAME} {self.host} {self.master.port} {QUORUM}",
            f"sentinel down-after-milliseconds {MASTER_NAME} {DOWN_AFTER_MS}",
            f"sentinel failover-timeout {MASTER_NAME} 10000",
        ]
        if self.password:  # what the sentinels give the master and replicas
            lines.append(f"sentinel auth-pass {MASTER_NAME} {self.password}")
        if self.sentinel_password:  # asked of clients, and given to the other sentinels
            lines.append(f"requirepass {self.sentinel_password}")

        def write() -> None:
            folder.mkdir(parents=True, exist_ok=True)
            config.write_text("\n".join(lines) + "\n")

        await asyncio.to_thread(write)
        argv = [self.binary, str(config), "--sentinel"]
        process = Process(f"sentinel:{port}", argv, dict(os.environ), folder / "sentinel.log")
        self.sentinels.append(await process.start())

        async def up() -> bool:
            if not process.running():
                raise AssertionError("sentinel exited:\n" + await process.output())
            return await _answers(port, self.host, self.sentinel_password)

        await wait_until(up, within=10)

    async def _ready(self) -> bool:
        client = _client(self.master.port, self.host, self.password)
        try:  # the master counts a replica once it has acknowledged its sync (once a second)
            if await client.wait(len(self.replicas), 100) < len(self.replicas):
                return False
        finally:
            await client.aclose()
        for n in range(SENTINELS):
            client = self.sentinel(n)
            try:
                state: dict[str, Any] = await client.sentinel_master(MASTER_NAME)  # type: ignore[no-untyped-call]
            finally:
                await client.aclose()
            others, known = int(state["num-other-sentinels"]), int(state["num-slaves"])
            if others < SENTINELS - 1 or known < len(self.replicas):
                return False
        return True

    async def master_port(self) -> int:
        """The master's port, as the first sentinel names it now."""
        client = self.sentinel()
        try:
            _, port = await client.sentinel_get_master_addr_by_name(MASTER_NAME)  # type: ignore[no-untyped-call]
        finally:
            await client.aclose()
        return int(port)

    async def rejoin_as_replica(self, server: RedisServer, master_port: int) -> RedisServer:
        """Start the stopped ``server`` again, on its port and data, as the replica of
        ``master_port``; the sentinels pick it up from the master."""
        follow = ("--replicaof", self.host, str(master_port))
        again = RedisServer(
            self.binary,
            server.port,
            server.folder,
            *self.options,
            *follow,
            host=self.host,
            password=self.password,
        )
        self.servers[self.servers.index(server)] = again
        await again.start()
        return again

    @asynccontextmanager
    async def switch(self) -> AsyncIterator[asyncio.Future[int]]:
        """Within the block, a future that gets the new master's port once the sentinels
        announce a switch (``+switch-master``)."""
        # no socket timeout: the announcement may take longer than any read timeout
        client = Redis(
            host=self.host,
            port=self.sentinel_ports[0],
            password=self.sentinel_password,
            decode_responses=True,
        )
        pubsub = client.pubsub()
        await pubsub.subscribe("+switch-master")
        switched: asyncio.Future[int] = asyncio.get_running_loop().create_future()

        async def listen() -> None:
            try:
                async for message in pubsub.listen():
                    if message["type"] == "message":  # "<name> <old ip> <old port> <ip> <port>"
                        switched.set_result(int(message["data"].split()[-1]))
                        return
            except Exception as exc:  # the test waiting on the future gets it
                switched.set_exception(exc)

        listener = asyncio.create_task(listen())
        try:
            yield switched
        finally:
            listener.cancel()
            await asyncio.gather(listener, return_exceptions=True)
            await pubsub.aclose()  # type: ignore[no-untyped-call]
            await client.aclose()

    async def stop(self) -> None:
        for process in [*self.sentinels, *(server.process for server in self.servers)]:
            await process.kill()
