"""Blocking Pillow work for thumbnails; called only from the worker's thread pool.

The work is split into decode, resize and save so the job can report each step as progress;
:func:`make_thumbnail` runs all three in one call.
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Callable, Iterator
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


def configure_pillow(max_pixels: int) -> None:
    """Pillow's own bomb check, in this process: its warning is an error, its limit not below ours.

    Pillow only warns (DecompressionBombWarning) between its limit and twice it; the filter
    turns that warning into an error. The limit that counts is checked by
    :func:`refuse_too_many_pixels` on every image; Pillow's global limit is only raised (never
    lowered) so that a MAX_IMAGE_PIXELS above Pillow's default still lets those images through.
    """
    Image.MAX_IMAGE_PIXELS = max(Image.MAX_IMAGE_PIXELS or 0, max_pixels)
    warnings.filterwarnings("error", category=Image.DecompressionBombWarning)


def refuse_too_many_pixels(image: Image.Image, max_pixels: int) -> None:
    """Decoding takes memory by pixel count, not file size: a 50 KB PNG can hold 400 MP."""
    width, height = image.size
    if width * height > max_pixels:
        raise Image.DecompressionBombError(
            f"image dimensions are too large: {width}x{height} is over the {max_pixels}-pixel limit"
        )


def thumbnail_path(source: Path) -> Path:
    return source.with_name(thumbnail_name(source.name))


def thumbnail_name(upload: str) -> str:
    """``<name>_thumb.<ext>`` for the upload ``<name>.<ext>``."""
    stem, dot, suffix = upload.rpartition(".")
    return f"{stem}_thumb.{suffix}" if dot and stem else f"{upload}_thumb"


@contextlib.contextmanager
def _as_thumbnail_error(source: Path) -> Iterator[None]:
    """Pillow's and the file system's errors, as one ThumbnailError with a client-safe reason."""
    try:
        yield
    except FileNotFoundError:
        raise ThumbnailError(f"upload {source.name!r} not found") from None
    except UnidentifiedImageError:
        raise ThumbnailError(f"{source.name!r} is not a JPEG, PNG, GIF or WebP image") from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise ThumbnailError(f"image refused: {exc}") from None
    except OSError as exc:
        # strerror, not str(exc): the message must not show server paths to clients
        raise ThumbnailError(f"could not make a thumbnail: {exc.strerror or exc}") from None
    except (SyntaxError, ValueError) as exc:
        raise ThumbnailError(f"corrupt image: {exc}") from None


def decode(source: Path, max_pixels: int) -> Image.Image:
    """Open and decode ``source``, upright (EXIF orientation applied); the caller closes it.

    The pixel count is checked from the header, before anything is decoded.
    """
    with _as_thumbnail_error(source):
        image = Image.open(source, formats=ALLOWED_FORMATS)
        try:
            refuse_too_many_pixels(image, max_pixels)
            image.draft("RGB", THUMBNAIL_SIZE)  # JPEG: decode at a reduced scale when it can
            image.load()
            ImageOps.exif_transpose(image, in_place=True)  # phone photos: honour orientation
        except BaseException:
            image.close()
            raise
    return image


def resize(image: Image.Image, source: Path) -> tuple[int, int]:
    """Shrink ``image`` in place to fit 800x800, aspect kept, never enlarged."""
    with _as_thumbnail_error(source):
        image.thumbnail(THUMBNAIL_SIZE)
    return image.size


def save(image: Image.Image, image_format: str | None, source: Path, target: Path) -> None:
    """Write ``image`` to ``target``, a new file with the mode the process umask gives.

    ``target`` is a temporary name: the job then stores it whole (a rename in the uploads
    folder, or one S3 PUT), so readers see no thumbnail or a whole one, never part of it.
    """
    with _as_thumbnail_error(source), target.open("wb") as out:
        image.save(out, format=image_format, **SAVE_OPTIONS.get(image_format or "", {}))


def make_thumbnail(
    source: Path, target: Path, max_pixels: int, on_step: Callable[[str], None] | None = None
) -> tuple[int, int]:
    """Resize ``source`` to fit 800x800 and write it to ``target``; ``on_step`` hears
    "decoded", "resized" and "written" as each step ends."""
    report = on_step or (lambda _: None)
    with decode(source, max_pixels) as image:
        report("decoded")
        image_format = image.format
        size = resize(image, source)
        report("resized")
        save(image, image_format, source, target)
        report("written")
    return size
