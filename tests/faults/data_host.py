"""``python -m tests.faults.data_host ADDRESS FOLDER PG_FOLDER HOLD``: the several-hosts test's
data host, run inside its network namespace (tests/netns.py).

It starts, all listening on ADDRESS: a Redis master and its replica watched by three
sentinels (tests/faults/sentinels.py); a PostgreSQL cluster on PG_FOLDER (made by the test
with tests/postgres.py's ClusterFolder: initdb needs no network, and the test removes it)
holding an empty ``jobservice`` database; moto's S3 server (tests/s3_server.py) with an empty
bucket; an SMTP server writing what it accepts to FOLDER/mail.jsonl, holding replies to
"slow" subjects HOLD seconds (tests/faults/mail_log.py). The same helpers the loopback tests
use, here on the host's own address: each one's readiness check runs from inside the
namespace, where that address answers. Then it writes FOLDER/ready.json (every address) and
runs until the test kills every process of the namespace.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import sys
from pathlib import Path

import asyncpg

from tests.conftest import free_port
from tests.faults import mail_log
from tests.faults.sentinels import MASTER_NAME, SentinelGroup
from tests.postgres import ClusterFolder, PostgresCluster, with_database
from tests.s3_server import MotoServer

BUCKET = "jobservice-files"
DATABASE = "jobservice"


async def _postgres(address: str, folder: Path) -> PostgresCluster:
    cluster = PostgresCluster(ClusterFolder(folder), free_port(address), host=address)
    await asyncio.to_thread(cluster.start)
    admin = await asyncpg.connect(cluster.admin_url, timeout=10)
    try:
        await admin.execute(f'CREATE DATABASE "{DATABASE}"')
    finally:
        await admin.close()
    return cluster


def _s3(address: str, folder: Path) -> MotoServer:
    server = MotoServer(folder / "moto.log", free_port(address), host=address).start()
    server.client().create_bucket(Bucket=BUCKET)
    return server


async def main(address: str, folder: Path, pg_folder: Path, hold: float) -> None:
    binary = shutil.which("redis-server")
    assert binary is not None, "redis-server is not installed"
    group = SentinelGroup(binary, folder / "redis", replicas=1, host=address)
    smtp_port = free_port(address)
    smtp = await mail_log.serve(folder / "mail.jsonl", address, smtp_port, hold)
    # the three start together: each waits on its own server, and the machine has two cores
    _, postgres, s3 = await asyncio.gather(
        group.start(), _postgres(address, pg_folder), asyncio.to_thread(_s3, address, folder)
    )
    ready = {
        "sentinels": list(group.addresses),
        "master_name": MASTER_NAME,
        "master": f"{address}:{group.master.port}",
        "postgres": f"{address}:{postgres.port}",
        "database_url": with_database(postgres.admin_url, DATABASE),
        "s3_endpoint": s3.endpoint,
        "s3_keys": [s3.keys.access_key_id, s3.keys.secret_access_key],
        "bucket": BUCKET,
        "smtp": f"{address}:{smtp_port}",
    }
    written = folder / "ready.json.tmp"
    written.write_text(json.dumps(ready))
    written.replace(folder / "ready.json")  # whole or not at all: the test polls for it
    print("data host ready", flush=True)
    await smtp.serve_forever()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], Path(sys.argv[2]), Path(sys.argv[3]), float(sys.argv[4])))
