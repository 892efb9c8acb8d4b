"""Receiving an uploaded image: streamed to disk with a byte limit, identified by content.

The client's filename and Content-Type are ignored: Pillow decides what the bytes are, and the
file is stored under a fresh server-generated name, so nothing the client sends becomes a path.
The bytes go to a local temporary file first (in the uploads folder, or DATA_DIR/tmp when
storage is S3), are checked there, and only then stored; the temporary file never outlives
the request.
"""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path
from typing import BinaryIO, Protocol

from aiohttp import BodyPartReader, MultipartReader
from PIL import Image, UnidentifiedImageError

from jobs.thumbnails import ALLOWED_FORMATS, refuse_too_many_pixels
from service.store.storage import UPLOADS, Storage
from web.errors import ApiError

CHUNK_SIZE = 64 * 1024
OTHER_FIELDS_LIMIT = 64 * 1024  # all parts but the file, together; the Content-Length slack
EXTENSIONS = {"JPEG": ".jpg", "PNG": ".png", "GIF": ".gif", "WEBP": ".webp"}


def detect_format(path: Path, max_pixels: int) -> str | None:
    """The image format from the file's content, or None if it is not an allowed image.

    Reads the header only; an image over ``max_pixels`` is refused (413) before any decoding.
    """
    try:
        with Image.open(path, formats=ALLOWED_FORMATS) as image:
            refuse_too_many_pixels(image, max_pixels)
            return image.format
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise ApiError(
            413, f"image dimensions are too large: over the {max_pixels}-pixel limit"
        ) from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError):
        return None


def _open_new(path: Path) -> BinaryIO:
    return open(path, "xb")


class Hasher(Protocol):
    def update(self, data: bytes, /) -> None: ...


async def receive_image(
    field: BodyPartReader,
    storage: Storage,
    max_bytes: int,
    max_pixels: int,
    digest: Hasher | None = None,
) -> str:
    """Store the part under a new name in the uploads area and return that name; ``digest``,
    when given, is fed the content on the way (for Idempotency-Key fingerprints).

    Raises ApiError 413 as soon as the part passes ``max_bytes`` and 415 when it is not a
    JPEG, PNG, GIF or WebP image, or 413 when it has more than ``max_pixels`` pixels, and
    StorageUnavailableError (503) when storage does not take it; either way nothing is left
    behind, neither the temporary file nor an object.
    """
    loop = asyncio.get_running_loop()
    temp = storage.temp_path(UPLOADS, prefix=".incoming-")
    out = await loop.run_in_executor(None, _open_new, temp)
    try:
        size = 0
        while chunk := await field.read_chunk(CHUNK_SIZE):
            size += len(chunk)
            if size > max_bytes:
                raise ApiError(413, f"file is larger than the {max_bytes}-byte limit")
            if digest is not None:
                digest.update(chunk)
            await loop.run_in_executor(None, out.write, chunk)
        await loop.run_in_executor(None, out.close)
        if size == 0:
            raise ApiError(400, "the uploaded file is empty")
        image_format = await loop.run_in_executor(None, detect_format, temp, max_pixels)
        if image_format is None:
            raise ApiError(415, "unsupported file type: upload a JPEG, PNG, GIF or WebP image")
        name = f"{uuid.uuid4().hex}{EXTENSIONS[image_format]}"
        await storage.store(UPLOADS, name, temp)
        return name
    finally:
        await loop.run_in_executor(None, out.close)  # a no-op once closed
        await storage.discard(temp)


async def skip_part(part: BodyPartReader | MultipartReader | None, budget: int) -> int:
    """Read and drop a part that is not the file; return what is left of ``budget``.

    Without a budget, a chunked request could stream gigabytes in a field nobody reads.
    """
    if not isinstance(part, BodyPartReader):
        raise ApiError(400, "nested multipart parts are not supported")
    while chunk := await part.read_chunk(CHUNK_SIZE):
        budget -= len(chunk)
        if budget < 0:
            raise ApiError(
                413, f"fields other than 'file' pass the {OTHER_FIELDS_LIMIT}-byte limit"
            )
    return budget
