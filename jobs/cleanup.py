"""The cleanup_old_files cron job (02:00): removes uploads older than CLEANUP_MAX_AGE_DAYS."""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path

from service.runtime import Cron, Job, JobContext, NoInput


async def cleanup_old_files(ctx: JobContext) -> dict[str, int]:
    """Delete uploads older than CLEANUP_MAX_AGE_DAYS (the walk runs in the thread pool)."""
    settings = ctx["settings"]
    max_age = settings.cleanup_max_age_days * 86_400
    loop = asyncio.get_running_loop()
    deleted = await loop.run_in_executor(
        ctx["executor"], delete_older_than, settings.uploads_dir, max_age
    )
    return {"deleted": deleted}


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


# Not queued through POST /jobs: the dashboard's "Run now" starts it by hand.
JOB = Job(name="cleanup_old_files", run=cleanup_old_files, input=NoInput, cron=Cron(hour=2))
