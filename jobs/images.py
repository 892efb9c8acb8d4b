"""The process_image job: a thumbnail beside the upload, resized in the worker's thread pool."""

from __future__ import annotations

import asyncio
from pathlib import Path

from jobs.thumbnails import ThumbnailError, make_thumbnail, thumbnail_name
from service.runtime import (
    UPLOADS,
    Job,
    JobContext,
    JobInput,
    PermanentError,
    StorageUnavailableError,
    TransientError,
    count_today,
)

STEPS = 3  # decoded, resized, saved


def check_upload_name(upload: str) -> str:
    """Only a bare file name is accepted, so it cannot leave the uploads folder or prefix."""
    if (
        upload in {"", ".", ".."}
        or upload != Path(upload).name
        or upload.startswith(".")
        or any(char in upload for char in "\\/\x00")
    ):
        raise PermanentError(f"invalid upload name {upload!r}")
    return upload


async def process_image(ctx: JobContext, *, upload: str) -> dict[str, str | int]:
    """Make an upload's thumbnail, fitting in 800x800, beside it.

    The thumbnail is ``<name>_thumb.<ext>``. The upload is read from a local file (in S3, it
    is downloaded to one first: the whole upload is never in memory but as Pillow decodes
    it); the thumbnail is written to a temporary file and stored whole, so a run that stops
    half way leaves nothing, and running twice is safe. Reports progress after each step:
    decoded, resized, saved. Storage that does not answer is a TransientError (retried).
    """
    settings, progress, storage = ctx["settings"], ctx["progress"], ctx["storage"]
    name = thumbnail_name(check_upload_name(upload))
    loop = asyncio.get_running_loop()
    steps = {"decoded": 1, "resized": 2}

    def on_step(step: str) -> None:  # in the pool's thread: the report goes to the loop
        if step in steps:
            report = progress(step, done=steps[step], total=STEPS)
            asyncio.run_coroutine_threadsafe(report, loop)

    target = storage.temp_path(UPLOADS, suffix=Path(name).suffix)
    try:
        async with storage.local_copy(UPLOADS, upload) as source:
            # one pool call per image, start to finish: a thread keeps one image hot in its
            # cache, rather than 50 running jobs' decode, resize and save steps taking turns
            width, height = await loop.run_in_executor(
                ctx["executor"], make_thumbnail, source, target, settings.max_image_pixels, on_step
            )
        await storage.store(UPLOADS, name, target)
    except FileNotFoundError:
        raise PermanentError(f"upload {upload!r} not found") from None
    except ThumbnailError as exc:
        raise PermanentError(str(exc)) from None
    except StorageUnavailableError as exc:
        raise TransientError("file storage unavailable") from exc  # exc names the server
    except OSError as exc:  # a full disk under the temporary copy
        reason = exc.strerror or type(exc).__name__  # never the file's path
        raise PermanentError(f"could not make a thumbnail: {reason}") from exc
    finally:
        await storage.discard(target)
    await progress("saved", done=3, total=STEPS)
    await count_today(ctx["redis"], settings.timezone, images_processed=1)
    return {"thumbnail": name, "width": width, "height": height}


class ProcessImage(JobInput):
    upload: str  # a file name in the uploads area (checked again by check_upload_name)


# Queued by POST /upload only, once the file is stored and checked.
JOB = Job(
    name="process_image",
    run=process_image,
    input=ProcessImage,
    time_limit=lambda settings: settings.image_job_timeout,
    queue="images",  # CPU-bound: a pool of its own can serve it (WORKER_QUEUES=images)
)
