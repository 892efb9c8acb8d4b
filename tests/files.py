"""File work for async tests, done in a thread as the service does its own.

Beside a running event loop a blocking file call fails the test (the blockbuster fixture in
conftest.py), so a test that looks at or prepares files on disk goes through these.
"""

from __future__ import annotations

import asyncio
from pathlib import Path


async def names_in(folder: Path) -> list[str]:
    """The names of the entries of ``folder``, sorted."""
    return await asyncio.to_thread(lambda: sorted(path.name for path in folder.iterdir()))


async def exists(path: Path) -> bool:
    return await asyncio.to_thread(path.exists)


async def read_bytes(path: Path) -> bytes:
    return await asyncio.to_thread(path.read_bytes)


async def read_text(path: Path) -> str:
    return await asyncio.to_thread(path.read_text)


async def write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path``, making its folder first if it does not exist yet."""

    def write() -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)

    await asyncio.to_thread(write)
