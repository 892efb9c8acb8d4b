"""Blocking file-system helpers; run them in a thread pool, never on the event loop."""

from __future__ import annotations

import os
import secrets
from pathlib import Path


def make_folders(*folders: Path) -> None:
    """Create each folder and its parents; fine if they exist."""
    for folder in folders:
        folder.mkdir(parents=True, exist_ok=True)


def write_atomically(target: Path, data: bytes) -> None:
    """Write to a temp file in the same folder, fsync, rename: no reader sees half a file.

    The temp file is made as any new file (mode 0666 less the process umask), not by
    mkstemp, whose 0600 the rename would carry into place: a web server running as another
    user could not serve what a job wrote.
    """
    target.parent.mkdir(parents=True, exist_ok=True)
    temp = target.parent / f".tmp-{secrets.token_hex(8)}"
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o666)
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(data)
            out.flush()
            os.fsync(out.fileno())
        os.replace(temp, target)
    except BaseException:
        temp.unlink(missing_ok=True)
        raise
