"""The process_image job: a thumbnail beside the upload, resized in the worker's thread pool."""

from __future__ import annotations

import asyncio
from pathlib import Path

from jobs.thumbnails import ThumbnailError, make_thumbnail, thumbnail_path
from service.runtime import Job, JobContext, JobInput, PermanentError, count_today

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
    """Make an upload's thumbnail, fitting in 800x800, beside it.

    The thumbnail is ``<name>_thumb.<ext>``. Safe to run twice (the file is renamed into
    place). Reports progress after each step: decoded, resized, saved.
    """
    settings, progress = ctx["settings"], ctx["progress"]
    source = resolve_upload(settings.uploads_dir, upload)
    target = thumbnail_path(source)
    loop = asyncio.get_running_loop()
    steps = {"decoded": 1, "resized": 2, "saved": 3}

    def on_step(step: str) -> None:  # in the pool's thread: the report goes to the loop
        report = progress(step, done=steps[step], total=STEPS)
        asyncio.run_coroutine_threadsafe(report, loop)

    try:
        # one pool call per image, start to finish: a thread keeps one image hot in its cache,
        # rather than 50 running jobs' decode, resize and save steps taking turns
        width, height = await loop.run_in_executor(
            ctx["executor"], make_thumbnail, source, target, settings.max_image_pixels, on_step
        )
    except ThumbnailError as exc:
        raise PermanentError(str(exc)) from None
    await count_today(ctx["redis"], settings.timezone, images_processed=1)
    return {"thumbnail": target.name, "width": width, "height": height}


class ProcessImage(JobInput):
    upload: str  # a file name in the uploads folder (checked again by resolve_upload)


# Queued by POST /upload only, once the file is stored and checked.
JOB = Job(
    name="process_image",
    run=process_image,
    input=ProcessImage,
    time_limit=lambda settings: settings.image_job_timeout,
)
