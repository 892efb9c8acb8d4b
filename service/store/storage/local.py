"""Files in folders under DATA_DIR (``uploads/``, ``reports/``): the default, as before S3.

Every file call runs in a thread (asyncio.to_thread), never on the event loop. A file is
written to a temporary name in its own folder and renamed into place, so a reader sees a
whole file or none, with the mode the process umask gives.
"""

from __future__ import annotations

import asyncio
import os
import stat
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from service.store.files import make_folders
from service.store.storage import (
    Area,
    Download,
    StorageStartError,
    is_bare_name,
    new_temp_name,
    remove_quietly,
)
from settings import Settings

CHUNK_SIZE = 64 * 1024


class LocalStorage:
    """Folders on this machine's disk."""

    def __init__(self, folders: dict[Area, Path]) -> None:
        self._folders = folders
        self.where = f"folder {folders['uploads'].parent}"

    @classmethod
    async def open(cls, settings: Settings) -> LocalStorage:
        folders: dict[Area, Path] = {
            "uploads": settings.uploads_dir,
            "reports": settings.reports_dir,
        }
        try:
            await asyncio.to_thread(make_folders, *folders.values())
        except OSError as exc:
            raise StorageStartError(
                f"file storage: DATA_DIR={settings.data_dir}: cannot make the uploads and"
                f" reports folders there ({exc.strerror or exc})"
            ) from None
        return cls(folders)

    def _path(self, area: Area, name: str) -> Path:
        if not is_bare_name(name):
            raise ValueError(f"not a bare file name: {name!r}")
        return self._folders[area] / name

    def temp_path(self, area: Area, prefix: str = ".tmp-", suffix: str = "") -> Path:
        # in the area's own folder: the rename into place stays on one file system (atomic)
        return self._folders[area] / new_temp_name(prefix, suffix)

    async def store(self, area: Area, name: str, temp: Path) -> None:
        await asyncio.to_thread(os.replace, temp, self._path(area, name))

    async def discard(self, temp: Path) -> None:
        await remove_quietly(temp)

    @asynccontextmanager
    async def local_copy(self, area: Area, name: str) -> AsyncIterator[Path]:
        """The file itself: nothing to copy."""
        yield self._path(area, name)

    @asynccontextmanager
    async def reader(self, area: Area, name: str) -> AsyncIterator[Download | None]:
        """A regular file only: opened without following a symlink, checked once open, so
        nothing can be swapped in between the check and the read."""
        opened = await asyncio.to_thread(_open_regular, self._path(area, name))
        if opened is None:
            yield None
            return
        fd, size, modified = opened
        try:
            yield Download(size, modified, _chunks(fd))
        finally:
            await asyncio.to_thread(os.close, fd)

    async def delete(self, area: Area, name: str) -> None:
        await remove_quietly(self._path(area, name))

    async def delete_older_than(self, area: Area, cutoff: float) -> int:
        return await asyncio.to_thread(delete_older_than, self._folders[area], cutoff)

    async def check(self) -> None:
        if not await asyncio.to_thread(os.access, self._folders["uploads"], os.W_OK):
            raise OSError(f"{self._folders['uploads']} is not writable")

    async def close(self) -> None:
        return None


def _open_regular(path: Path) -> tuple[int, int, float] | None:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError:  # missing, a symlink (ELOOP), unreadable
        return None
    info = os.fstat(fd)
    if not stat.S_ISREG(info.st_mode):
        os.close(fd)
        return None
    return fd, info.st_size, info.st_mtime


async def _chunks(fd: int) -> AsyncIterator[bytes]:
    offset = 0
    while chunk := await asyncio.to_thread(os.pread, fd, CHUNK_SIZE, offset):
        offset += len(chunk)
        yield chunk


def delete_older_than(folder: Path, cutoff: float) -> int:
    """Delete regular files in ``folder`` (not below it) last modified before ``cutoff``.

    Symlinks are skipped, never followed, and sub-folders are not entered, so nothing outside
    the folder can be touched. A file that vanishes meanwhile is simply not counted.
    """
    deleted = 0
    try:
        entries = list(os.scandir(folder))
    except FileNotFoundError:
        return 0
    for entry in entries:
        try:
            if not entry.is_file(follow_symlinks=False):
                continue
            if entry.stat(follow_symlinks=False).st_mtime >= cutoff:
                continue
            os.unlink(entry.path)
        except FileNotFoundError:
            continue
        deleted += 1
    return deleted
