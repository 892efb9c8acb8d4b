"""Blocking file-system helpers; run them in a thread pool, never on the event loop."""

from __future__ import annotations

import os
import tempfile
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
