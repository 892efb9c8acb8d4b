"""The cleanup_old_files cron job (02:00): removes uploads older than CLEANUP_MAX_AGE_DAYS."""

from __future__ import annotations

import time

from service.runtime import (
    UPLOADS,
    Cron,
    Job,
    JobContext,
    NoInput,
    StorageUnavailableError,
    TransientError,
)


async def cleanup_old_files(ctx: JobContext) -> dict[str, int]:
    """Delete uploads (and thumbnails) older than CLEANUP_MAX_AGE_DAYS.

    Storage walks the uploads area one page at a time and deletes only what is directly in
    it: locally no symlink is followed and no sub-folder entered; in S3 nothing outside
    ``<prefix>/uploads/`` is listed, and nothing below it.
    """
    cutoff = time.time() - ctx["settings"].cleanup_max_age_days * 86_400
    try:
        deleted = await ctx["storage"].delete_older_than(UPLOADS, cutoff)
    except StorageUnavailableError as exc:
        raise TransientError("file storage unavailable") from exc  # exc names the server
    return {"deleted": deleted}


# Not queued through POST /jobs: the dashboard's "Run now" starts it by hand.
JOB = Job(name="cleanup_old_files", run=cleanup_old_files, input=NoInput, cron=Cron(hour=2))
