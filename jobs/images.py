"""The process_image job: a thumbnail beside the upload, resized in the worker's thread pool."""

from __future__ import annotations

import asyncio
from pathlib import Path

from jobs.context import JobContext
from jobs.errors import PermanentError
from jobs.thumbnails import ThumbnailError, decode, resize, save, thumbnail_path
from service import stats

STEPS = 3  # decoded, resized, saved


def resolve_upload(uploads_dir: Path, upload: str) -> Path:
    """The upload's path; only a bare file name is accepted, so it cannot leave the folder."""
    if (
        upload in {"", ".", ".."}
        or upload != Path(upload).name
        or any(char in upload for char in "\\/\x00")
    ):
        raise PermanentError(f"invalid upload name {upload!r}")
    return uploads_dir / upload


async def process_image(ctx: JobContext, *, upload: str) -> dict[str, str | int]:
    """Write ``<name>_thumb.<ext>`` next to the upload; safe to run twice (atomic rename).

    Reports progress after each step: decoded, resized, saved.
    """
    settings, progress = ctx["settings"], ctx["progress"]
    source = resolve_upload(settings.uploads_dir, upload)
    target = thumbnail_path(source)
    loop = asyncio.get_running_loop()
    pool = ctx["executor"]
    try:
        image = await loop.run_in_executor(pool, decode, source, settings.max_image_pixels)
        try:
            image_format = image.format
            await progress("decoded", done=1, total=STEPS)
            width, height = await loop.run_in_executor(pool, resize, image, source)
            await progress("resized", done=2, total=STEPS)
            await loop.run_in_executor(pool, save, image, image_format, source, target)
            await progress("saved", done=3, total=STEPS)
        finally:
            await loop.run_in_executor(pool, image.close)
    except ThumbnailError as exc:
        raise PermanentError(str(exc)) from None
    await stats.count(ctx["redis"], settings.timezone, images_processed=1)
    return {"thumbnail": target.name, "width": width, "height": height}
