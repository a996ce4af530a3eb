"""Image sources for the layers world: any folders of pictures, split into backgrounds and sprites.

A PNG that can hold transparency (an alpha channel or a tRNS chunk, read from its header) is a
sprite (clip art, a cut-out); every other picture is a background (photos, textures), which also
give cut-out sprites. Each folder given is one source, drawn as often as the others whatever its
size, so a few photos are not drowned by thousands of clip-art files. Files are listed in a fixed
order, so a dataset is a function of the folders and the seed (`fingerprint` names the listing).
Pictures are read at most MAX_SIDE px across and kept in a cache (4096 px webp files are slow).
"""

from __future__ import annotations

import functools
import hashlib
import os
import struct
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from keyframe.errors import UserError

SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff")
MAX_SIDE = 1024  # pictures are read at most this large (backgrounds); sprites at SPRITE_SIDE
SPRITE_SIDE = 256
EVAL_SHARE = 10  # one file in EVAL_SHARE (by a hash of its name) is kept for evaluation


@dataclass(frozen=True)
class Sources:
    """Sorted picture files per source folder: `backgrounds` (opaque), `sprites` (alpha)."""

    backgrounds: tuple[tuple[str, ...], ...]
    sprites: tuple[tuple[str, ...], ...]

    def fingerprint(self) -> str:
        text = repr((self.backgrounds, self.sprites))
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    def background(self, rng: np.random.Generator) -> str:
        return _draw(rng, self.backgrounds)

    def sprite(self, rng: np.random.Generator) -> str | None:
        return _draw(rng, self.sprites) if any(self.sprites) else None


def _draw(rng: np.random.Generator, groups: tuple[tuple[str, ...], ...]) -> str:
    groups = [g for g in groups if g]
    group = groups[int(rng.integers(len(groups)))]
    return group[int(rng.integers(len(group)))]


def png_has_alpha(path: Path) -> bool:
    """Whether a PNG can be transparent: colour type 4 or 6, or a tRNS chunk before IDAT."""
    try:
        with open(path, "rb") as f:
            if f.read(8) != b"\x89PNG\r\n\x1a\n":
                return False
            while True:
                head = f.read(8)
                if len(head) < 8:
                    return False
                length, kind = struct.unpack(">I4s", head)
                if kind == b"IHDR":
                    colour_type = f.read(13)[9]
                    if colour_type in (4, 6):
                        return True
                    f.seek(4, 1)
                    continue
                if kind == b"tRNS":
                    return True
                if kind == b"IDAT":
                    return False
                f.seek(length + 4, 1)
    except (OSError, IndexError, struct.error):
        return False


def held_out(path: str) -> bool:
    """Files kept out of training datasets for evaluation (a fixed tenth, by name hash)."""
    digest = hashlib.sha256(Path(path).name.encode()).digest()
    return digest[0] % EVAL_SHARE == 0


def _files(folder: Path) -> list[Path]:
    found = []
    for root, _, names in os.walk(folder):
        found += [Path(root) / n for n in names if n.lower().endswith(SUFFIXES)]
    return sorted(found)


def find_sources(folders: list[str], split: str = "train") -> Sources:
    """The pictures under each of `folders` ("train": all but the held-out tenth; "eval": that
    tenth); UserError when no folder gives a background."""
    backgrounds, sprites = [], []
    for folder in folders:
        path = Path(folder)
        if not path.is_dir():
            raise UserError(f"--images {folder}: no such folder")
        files = [f for f in _files(path) if held_out(str(f)) == (split == "eval")]
        alpha = [f.suffix.lower() == ".png" and png_has_alpha(f) for f in files]
        pairs = list(zip(files, alpha, strict=True))
        backgrounds.append(tuple(str(f.resolve()) for f, a in pairs if not a))
        sprites.append(tuple(str(f.resolve()) for f, a in pairs if a))
    if not any(backgrounds):
        raise UserError(
            f"--images {' '.join(folders)}: no opaque pictures found (backgrounds need photos or "
            "textures: .png/.jpg/.webp); docs/datasets.md lists ready sources"
        )
    return Sources(tuple(backgrounds), tuple(sprites))


@functools.lru_cache(maxsize=128)
def read_picture(path: str, max_side: int = MAX_SIDE) -> np.ndarray:
    """(h, w, 4) float32 RGBA in [0, 1], colour premultiplied, at most `max_side` px across.
    Large pictures are shrunk in their own 8/16-bit form first (clip art can be 20000 px
    across: as float it would not fit in memory)."""
    image = cv2.imread(path, cv2.IMREAD_UNCHANGED)
    if image is None or image.size == 0:
        raise UserError(f"{path}: cannot read this picture")
    scale = max_side / max(image.shape[:2])
    if scale < 1:
        size = (max(1, round(image.shape[1] * scale)), max(1, round(image.shape[0] * scale)))
        image = cv2.resize(image, size, interpolation=cv2.INTER_AREA)
    if image.dtype.kind == "f":
        image = np.nan_to_num(image.astype(np.float32), posinf=0.0, neginf=0.0)
        image = np.clip(image / max(float(image.max()), 1.0) * 255, 0, 255).astype(np.uint8)
    elif image.dtype != np.uint8:
        image = (image.astype(np.float32) * (255.0 / np.iinfo(image.dtype).max)).astype(np.uint8)
    if image.ndim == 2:
        image = cv2.cvtColor(image, cv2.COLOR_GRAY2BGRA)
    elif image.shape[2] == 3:
        image = cv2.cvtColor(image, cv2.COLOR_BGR2BGRA)
    rgba = cv2.cvtColor(image, cv2.COLOR_BGRA2RGBA).astype(np.float32) / 255.0
    rgba[..., :3] *= rgba[..., 3:]
    return rgba
