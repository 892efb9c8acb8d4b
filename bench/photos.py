"""Test photos for the images scenario, and the hardware limit: raw Pillow in a thread pool.

``python -m bench.photos DIR COUNT THREADS`` prints the thumbnails/s that the service's own
``make_thumbnail`` reaches when called straight from a thread pool, with nothing else around.
"""

from __future__ import annotations

import json
import random
import shutil
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from PIL import Image

from jobs.thumbnails import make_thumbnail, thumbnail_path
from settings import Settings

SIZE = (3000, 2000)
DISTINCT = 8  # distinct pictures; the rest are copies (decoding cost does not depend on it)


def _photo(seed: int) -> Image.Image:
    """Smooth colour fields with some grain: compresses and decodes like a real photo."""
    rng = random.Random(seed)
    small = Image.new("RGB", (48, 32))
    small.putdata(
        [(rng.randrange(256), rng.randrange(256), rng.randrange(256)) for _ in range(48 * 32)]
    )
    image = small.resize(SIZE, Image.Resampling.BICUBIC)
    grain = Image.effect_noise(SIZE, 64).convert("RGB")
    return Image.blend(image, grain, 0.3)


def make_photos(folder: Path, count: int) -> list[Path]:
    """``count`` JPEGs of 3000x2000 in ``folder``, made once and reused by later runs."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = [folder / f"photo-{n:04d}.jpg" for n in range(count)]
    for n, path in enumerate(paths):
        if path.exists():
            continue
        if n < DISTINCT:
            _photo(n).save(path, quality=90)
        else:
            shutil.copyfile(paths[n % DISTINCT], path)
    return paths


def raw_pillow(sources: list[Path], threads: int) -> float:
    """Thumbnails per second: make_thumbnail over ``sources`` in a pool of ``threads``."""
    max_pixels = Settings().max_image_pixels  # the service's default, as its jobs use it
    with tempfile.TemporaryDirectory() as scratch:
        copies = []
        for source in sources:
            copy = Path(scratch) / source.name
            shutil.copyfile(source, copy)
            copies.append(copy)
        started = time.perf_counter()
        with ThreadPoolExecutor(threads) as pool:
            list(pool.map(lambda p: make_thumbnail(p, thumbnail_path(p), max_pixels), copies))
        return len(copies) / (time.perf_counter() - started)


if __name__ == "__main__":
    folder, count, threads = Path(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
    print(json.dumps({"images_per_s": raw_pillow(make_photos(folder, count), threads)}))
