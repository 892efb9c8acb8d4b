"""Real image files made with Pillow for the tests."""

from __future__ import annotations

import io

from PIL import Image


def image_bytes(size: tuple[int, int] = (1600, 1200), image_format: str = "JPEG") -> bytes:
    mode = "P" if image_format == "GIF" else "RGB"
    image = Image.new("RGB", size, (200, 40, 90))
    for x in range(0, size[0], 50):  # some structure, so encoders do real work
        image.paste((x % 255, 120, 30), (x, 0, min(x + 10, size[0]), size[1]))
    if mode == "P":
        image = image.convert("P")
    out = io.BytesIO()
    image.save(out, format=image_format)
    return out.getvalue()
