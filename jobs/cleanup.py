"""The cleanup_old_files cron job (02:00): removes uploads older than CLEANUP_MAX_AGE_DAYS."""

from __future__ import annotations

import asyncio

from service.runtime.context import JobContext
from service.store.files import delete_older_than


async def cleanup_old_files(ctx: JobContext) -> dict[str, int]:
    """Delete old files in the uploads folder; the walk runs in the thread pool."""
    settings = ctx["settings"]
    max_age = settings.cleanup_max_age_days * 86_400
    loop = asyncio.get_running_loop()
    deleted = await loop.run_in_executor(
        ctx["executor"], delete_older_than, settings.uploads_dir, max_age
    )
    return {"deleted": deleted}
