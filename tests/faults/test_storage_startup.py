"""Storage that cannot be used stops ``python -m web`` and the worker at start, naming the setting.

The real commands, against the moto server of tests/s3_server.py (which checks signatures)
or a port nobody listens on; the output must say which setting is wrong and never show the
secret key.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import free_port
from tests.faults.conftest import Spawn
from tests.s3_server import MotoServer

STARTUP = 60


def _case(name: str, moto: MotoServer, tmp_path: Path) -> tuple[dict[str, Any], list[str]]:
    """The settings that break start-up, and what the message must say."""
    keys = {
        "aws_access_key_id": moto.keys.access_key_id,
        "aws_secret_access_key": moto.keys.secret_access_key,
    }
    s3 = {"s3_endpoint_url": moto.endpoint, **keys}
    if name == "data-dir-is-a-file":
        return {"data_dir": tmp_path / "a-file"}, ["DATA_DIR=", "Not a directory"]
    if name == "endpoint-down":
        down = f"http://127.0.0.1:{free_port()}"
        url = f"s3://{moto.new_bucket()}/p"
        return {"storage_url": url, **keys, "s3_endpoint_url": down}, [
            f"S3_ENDPOINT_URL={down}",
            "cannot reach",
        ]
    if name == "no-such-bucket":
        return {"storage_url": "s3://no-such-bucket-here/p", **s3}, [
            "STORAGE_URL=s3://no-such-bucket-here/p",
            "there is no bucket named 'no-such-bucket-here'",
        ]
    url = f"s3://{moto.new_bucket()}/p"
    if name == "unknown-access-key":
        unknown = {**s3, "aws_access_key_id": "AKIAUNKNOWN000000000"}
        return {"storage_url": url, **unknown}, [
            "AWS_ACCESS_KEY_ID: the server does not know the access key 'AKIA...'",
            "InvalidAccessKeyId",
        ]
    assert name == "wrong-secret"
    wrong = {**s3, "aws_secret_access_key": "not-the-secret-0123456789"}
    return {"storage_url": url, **wrong}, [
        "AWS_SECRET_ACCESS_KEY: the server refused the signature",
        "SignatureDoesNotMatch",
    ]


@pytest.mark.parametrize(
    "case",
    ["data-dir-is-a-file", "endpoint-down", "no-such-bucket", "unknown-access-key", "wrong-secret"],
)
async def test_unusable_storage_stops_web_and_worker_with_the_setting_named(
    case: str, spawn: Spawn, moto_server: MotoServer, tmp_path: Path
) -> None:
    overrides, expected = await asyncio.to_thread(_case, case, moto_server, tmp_path)
    await asyncio.to_thread((tmp_path / "a-file").write_text, "in the way of DATA_DIR")
    web = await spawn("web", **overrides)
    worker = await spawn("worker", **overrides)

    for process in (web, worker):
        code = await process.wait(within=STARTUP)
        output = await process.output()
        assert code != 0, output
        for words in expected:
            assert words in output, output
        assert "Traceback" not in output, "a setting to fix, not a crash"
        secrets = {moto_server.keys.secret_access_key, str(overrides.get("aws_secret_access_key"))}
        assert not [secret for secret in secrets if secret in output], "the secret was shown"
