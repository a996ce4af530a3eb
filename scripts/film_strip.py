"""The README's frame strip: every 12th frame of the demo film, 100 px tiles, 2 px white gaps.

python scripts/film_strip.py demo/film.mp4 examples/shapes_film_strip.png
"""

from __future__ import annotations

import sys

import numpy as np
from PIL import Image

from pipeline.io_video import read_video_frames

EVERY, TILE, GAP = 12, 100, 2


def strip(frames: np.ndarray) -> Image.Image:
    tiles = [Image.fromarray(f).resize((TILE, TILE), Image.BICUBIC) for f in frames[::EVERY]]
    out = Image.new("RGB", (len(tiles) * (TILE + GAP) - GAP, TILE), "white")
    for i, tile in enumerate(tiles):
        out.paste(tile, (i * (TILE + GAP), 0))
    return out


if __name__ == "__main__":
    source, target = sys.argv[1:3]
    strip(read_video_frames(source)[0]).save(target)
