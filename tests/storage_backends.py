"""The two storage backends as the tests see them, from outside the service's storage code.

A local backend is looked at with plain file calls, an S3 one with boto3 against the moto
server (tests/s3_server.py); both in a thread, as blocking calls must be beside the loop.
"""

from __future__ import annotations

import asyncio
import os
from dataclasses import dataclass
from pathlib import Path

from pydantic import SecretStr

from service.store.storage import Area
from settings import Settings
from tests.s3_server import MotoServer

PREFIX = "pre/fix"


@dataclass
class Backend:
    """Where one test's files are: DATA_DIR's folders, or a fresh bucket under PREFIX."""

    kind: str
    settings: Settings
    server: MotoServer | None = None
    bucket: str = ""

    @classmethod
    def local(cls, settings: Settings) -> Backend:
        return cls("local", settings)

    @classmethod
    def s3(cls, settings: Settings, server: MotoServer) -> Backend:
        bucket = server.new_bucket()
        return cls(
            "s3",
            s3_settings(settings, server, f"s3://{bucket}/{PREFIX}"),
            server,
            bucket,
        )

    def key(self, area: Area, name: str) -> str:
        return f"{PREFIX}/{area}/{name}"

    async def names(self, area: Area) -> list[str]:
        """What is directly in ``area``, temporary files included, sorted."""
        if self.server is None:
            folder = self.settings.data_dir / area
            return await asyncio.to_thread(
                lambda: sorted(p.name for p in folder.iterdir()) if folder.exists() else []
            )
        keys = await asyncio.to_thread(self.server.keys_in, self.bucket, f"{PREFIX}/{area}/")
        return [key.rsplit("/", 1)[1] for key in keys if key.count("/") == PREFIX.count("/") + 2]

    async def all_keys(self) -> list[str]:
        """Every object in the bucket (S3 only)."""
        assert self.server is not None
        return await asyncio.to_thread(self.server.keys_in, self.bucket)

    async def read(self, area: Area, name: str) -> bytes:
        if self.server is None:
            return await asyncio.to_thread((self.settings.data_dir / area / name).read_bytes)
        return await asyncio.to_thread(self.server.read, self.bucket, self.key(area, name))

    async def put_key(self, key: str, data: bytes) -> None:
        """An object anywhere in the bucket (S3 only), e.g. outside the prefix."""
        assert self.server is not None
        await asyncio.to_thread(self.server.put, self.bucket, key, data)

    async def plant(self, area: Area, name: str, data: bytes, age_days: float = 0) -> None:
        """A file in ``area``; locally dated ``age_days`` back (S3 dates objects itself)."""
        if self.server is not None:
            await self.put_key(self.key(area, name), data)
            return
        path = self.settings.data_dir / area / name

        def write() -> None:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(data)
            when = path.stat().st_mtime - age_days * 86_400
            os.utime(path, (when, when))

        await asyncio.to_thread(write)

    async def temporary_files(self) -> list[str]:
        """Temporary files left on this machine: dot-files in the folders, or anything in
        DATA_DIR/tmp (where S3 transfers stage)."""
        data = self.settings.data_dir

        def find() -> list[str]:
            found = [p.name for p in (data / "tmp").glob("*")] if (data / "tmp").exists() else []
            for area in ("uploads", "reports"):
                if (data / area).exists():
                    found += [p.name for p in (data / area).iterdir() if p.name.startswith(".")]
            return sorted(found)

        return await asyncio.to_thread(find)


def s3_settings(settings: Settings, server: MotoServer, url: str, **changes: object) -> Settings:
    """``settings`` pointed at ``url`` on ``server`` with its keys (``changes`` on top)."""
    return settings.model_copy(
        update={
            "storage_url": url,
            "s3_endpoint_url": server.endpoint,
            "aws_access_key_id": server.keys.access_key_id,
            "aws_secret_access_key": SecretStr(server.keys.secret_access_key),
            **changes,
        }
    )


def tree(folder: Path) -> list[str]:
    """Every path under ``folder``, relative, sorted (call it in a thread)."""
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*"))
