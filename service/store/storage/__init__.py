"""Where uploads, thumbnails and reports live: folders under DATA_DIR, or an S3-compatible bucket.

Both backends keep the same rules, so the web app and the jobs never ask which one they have
(README "File storage"): a file is made in a local temporary file (:meth:`Storage.temp_path`),
checked there, then stored whole under a bare name (:meth:`Storage.store`: a rename in the
folder, or one PUT); readers get a local file to open (:meth:`Storage.local_copy`) or a
stream of chunks (:meth:`Storage.reader`), never the whole object in memory; the cleanup lists
one area page by page and deletes only what is directly in it.

Opened once per process (the web app's ``STORAGE`` key, the worker's ``ctx["storage"]``) by
:func:`open_storage`, which checks the backend answers before anything is served.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Protocol

from settings import Settings

Area = Literal["uploads", "reports"]
UPLOADS: Area = "uploads"
REPORTS: Area = "reports"
LIST_PAGE_SIZE = 1000  # S3's own largest page

CONTENT_TYPES = {
    ".jpg": "image/jpeg",
    ".png": "image/png",
    ".gif": "image/gif",
    ".webp": "image/webp",
    ".json": "application/json",
}


class StorageUnavailableError(Exception):
    """Storage did not answer or refused (endpoint down, timeout, 5xx, access revoked):
    worth trying again later. The message is safe to show: no keys, no server paths."""


class StorageStartError(SystemExit):
    """Storage could not be opened at start; the message names the setting to fix.

    A SystemExit, as settings.SettingsError: the process stops with the message and a
    non-zero code, without a traceback that would bury it.
    """


@dataclass(frozen=True, slots=True)
class Download:
    """An object being read: its size and time, and its content as chunks."""

    size: int
    modified: float  # seconds since the epoch
    chunks: AsyncIterator[bytes]


class Storage(Protocol):
    """One interface, two backends (local.py, s3.py)."""

    where: str  # for messages and logs: "folder var/uploads", "s3://bucket/prefix"

    def temp_path(self, area: Area, prefix: str = ".tmp-", suffix: str = "") -> Path:
        """A fresh local path (not created) to write a file bound for ``area``; give it to
        :meth:`store`, and :meth:`discard` it whatever happens."""
        ...

    async def store(self, area: Area, name: str, temp: Path) -> None:
        """Make the finished file ``temp`` the object ``name``, whole or not at all."""
        ...

    async def discard(self, temp: Path) -> None:
        """Remove a temporary file if it is still there."""
        ...

    def local_copy(self, area: Area, name: str) -> AbstractAsyncContextManager[Path]:
        """A local file holding the object, for code that opens files (Pillow); raises
        FileNotFoundError when there is no such object."""
        ...

    def reader(self, area: Area, name: str) -> AbstractAsyncContextManager[Download | None]:
        """The object's content as a stream of chunks; None when there is none."""
        ...

    async def delete(self, area: Area, name: str) -> None:
        """Delete the object; fine if it is not there."""
        ...

    async def delete_older_than(self, area: Area, cutoff: float) -> int:
        """Delete the objects directly in ``area`` last modified before ``cutoff`` (epoch
        seconds), never below it nor outside it; how many were deleted."""
        ...

    async def check(self) -> None:
        """Return when storage answers now; raise when it does not (``/health``)."""
        ...

    async def close(self) -> None: ...


def is_bare_name(name: str) -> bool:
    """A name that stays in its area: no separator, no leading dot, nothing to climb out."""
    return (
        bool(name)
        and not name.startswith(".")
        and not any(char in name for char in "/\\\x00")
        and len(name) <= 255
    )


def new_temp_name(prefix: str, suffix: str) -> str:
    return f"{prefix}{uuid.uuid4().hex}{suffix}"


async def open_storage(settings: Settings, *, list_page_size: int = LIST_PAGE_SIZE) -> Storage:
    """The storage STORAGE_URL names, checked: folders under DATA_DIR when it is unset.

    Raises :class:`StorageStartError`, naming the setting, when it cannot be used.
    ``list_page_size``: objects per listing request (tests make it small).
    """
    if settings.storage_url is None:
        from service.store.storage.local import LocalStorage

        return await LocalStorage.open(settings)
    from service.store.storage.s3 import S3Storage

    return await S3Storage.open(settings, list_page_size=list_page_size)


async def remove_quietly(path: Path) -> None:
    """Unlink ``path`` in a thread; fine if it is gone already."""
    await asyncio.to_thread(path.unlink, missing_ok=True)
