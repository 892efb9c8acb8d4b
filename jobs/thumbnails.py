"""Blocking Pillow work for thumbnails; called only from the worker's thread pool."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from PIL import Image, ImageOps, UnidentifiedImageError

THUMBNAIL_SIZE = (800, 800)
ALLOWED_FORMATS = ("JPEG", "PNG", "GIF", "WEBP")
SAVE_OPTIONS: dict[str, dict[str, int | bool]] = {
    "JPEG": {"quality": 85, "optimize": True},
    "WEBP": {"quality": 85},
}


class ThumbnailError(Exception):
    """The upload could not be turned into a thumbnail (corrupt, unsupported, unwritable)."""


def thumbnail_path(source: Path) -> Path:
    return source.with_name(f"{source.stem}_thumb{source.suffix}")


def make_thumbnail(source: Path, target: Path) -> tuple[int, int]:
    """Resize ``source`` to fit 800x800 and write it to ``target`` atomically.

    The image is written to a temporary file in the target's folder, then renamed over the
    target, so readers see either no thumbnail or a whole one, never a partial file.
    """
    try:
        with Image.open(source, formats=ALLOWED_FORMATS) as image:
            image_format = image.format
            image.draft("RGB", THUMBNAIL_SIZE)  # JPEG: decode at a reduced scale when it can
            ImageOps.exif_transpose(image, in_place=True)  # phone photos: honour orientation
            image.thumbnail(THUMBNAIL_SIZE)
            width, height = image.size
            fd, temp_name = tempfile.mkstemp(
                prefix=".tmp-", suffix=source.suffix, dir=target.parent
            )
            try:
                with os.fdopen(fd, "wb") as out:
                    image.save(out, format=image_format, **SAVE_OPTIONS.get(image_format or "", {}))
                os.replace(temp_name, target)
            except BaseException:
                Path(temp_name).unlink(missing_ok=True)
                raise
    except FileNotFoundError:
        raise ThumbnailError(f"upload {source.name!r} not found") from None
    except UnidentifiedImageError:
        raise ThumbnailError(f"{source.name!r} is not a JPEG, PNG, GIF or WebP image") from None
    except Image.DecompressionBombError as exc:
        raise ThumbnailError(f"image refused: {exc}") from None
    except OSError as exc:
        # strerror, not str(exc): the message must not show server paths to clients
        raise ThumbnailError(f"could not make a thumbnail: {exc.strerror or exc}") from None
    except (SyntaxError, ValueError) as exc:
        raise ThumbnailError(f"corrupt image: {exc}") from None
    return width, height
