"""Blocking file-system helpers; run them in a thread pool, never on the event loop."""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path


def make_folders(*folders: Path) -> None:
    """Create each folder and its parents; fine if they exist."""
    for folder in folders:
        folder.mkdir(parents=True, exist_ok=True)


def write_atomically(target: Path, data: bytes) -> None:
    """Write to a temp file in the same folder, fsync, rename: no reader sees half a file."""
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, temp_name = tempfile.mkstemp(prefix=".tmp-", dir=target.parent)
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(data)
            out.flush()
            os.fsync(out.fileno())
        os.replace(temp_name, target)
    except BaseException:
        Path(temp_name).unlink(missing_ok=True)
        raise


def delete_older_than(folder: Path, max_age_seconds: float, now: float | None = None) -> int:
    """Delete regular files in ``folder`` (not below it) last modified before the cut-off.

    Symlinks are skipped, never followed, and sub-folders are not entered, so nothing outside
    the folder can be touched. A file that vanishes meanwhile is simply not counted.
    """
    cutoff = (time.time() if now is None else now) - max_age_seconds
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
