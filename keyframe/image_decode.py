"""Still images as training, inference and eval all read them: which files are images, the
order of numbered frames (natural: frame_2 before frame_10), and the one decoder (bytes -> uint8
RGB). OpenCV only, no torch, so the CLI starts fast and every stage sees the same pixels."""

from __future__ import annotations

import re
from contextlib import suppress
from pathlib import Path

import cv2
import numpy as np

from keyframe.errors import UserError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff")


def natural_key(name: str) -> tuple:
    """Sort key putting ``key2`` before ``key10`` (digit runs compare as numbers)."""
    parts = re.split(r"(\d+)", name)
    return tuple(int(p) if i % 2 else p.casefold() for i, p in enumerate(parts)), name


def image_files(folder: Path) -> list[Path]:
    """Image files directly inside `folder` in natural order; hidden files are skipped: the
    frames of a frame folder, in the order every reader takes them."""
    paths = [
        p
        for p in folder.iterdir()
        if p.suffix.lower() in IMAGE_SUFFIXES and not p.name.startswith(".") and p.is_file()
    ]
    return sorted(paths, key=lambda p: natural_key(p.name))


JPEG_MAGIC = b"\xff\xd8\xff"


def decode_image(data: np.ndarray, name: str | Path) -> np.ndarray:
    """Encoded image bytes (uint8 array) as uint8 RGB (h, w, 3): the one still decoder of
    training, inference and eval, so every stage sees the same pixels.

    Grayscale is repeated to RGB; 16-bit is scaled to 8-bit (rounded); float images (EXR/HDR)
    are clipped to [0, 1] with no tone mapping; alpha is composited onto white (transparent
    paper reads as white paper); JPEG EXIF orientation is applied. `name` is for messages.
    """
    return _to_rgb8(imdecode(data, name), name)


def imdecode(data: np.ndarray, name: str | Path) -> np.ndarray:
    """OpenCV's decode at the file's own depth, (h, w, 1|2|3|4) BGR(A) order, EXIF-upright."""
    image = None
    if data.size:
        jpeg = data[:3].tobytes() == JPEG_MAGIC  # JPEG has no alpha; COLOR applies orientation
        flags = cv2.IMREAD_COLOR | cv2.IMREAD_ANYDEPTH if jpeg else cv2.IMREAD_UNCHANGED
        with suppress(cv2.error):
            image = cv2.imdecode(data, flags)
    if image is None or image.size == 0:
        raise UserError(f"{name}: not a readable image (corrupt file or unsupported format)")
    image = image[:, :, None] if image.ndim == 2 else image
    if image.shape[2] not in (1, 2, 3, 4):
        raise UserError(f"{name}: unsupported image with {image.shape[2]} channels")
    return image


def _to_rgb8(image: np.ndarray, name: str | Path) -> np.ndarray:
    """imdecode's result (gray, gray+alpha, BGR or BGRA at any depth) -> uint8 RGB."""
    channels = image.shape[2]
    if image.dtype == np.uint8 and channels in (1, 3):  # the common case, exact without floats
        rgb = np.repeat(image, 3, axis=2) if channels == 1 else image[:, :, ::-1]
        return np.ascontiguousarray(rgb)
    pixels = image.astype(np.float32) / _full_scale(image.dtype, name)
    alpha = None
    if channels in (2, 4):
        pixels, alpha = pixels[:, :, :-1], pixels[:, :, -1:]
    pixels = np.repeat(pixels, 3, axis=2) if pixels.shape[2] == 1 else pixels[:, :, ::-1]  # BGR
    if alpha is not None:
        pixels = pixels * alpha + (1.0 - alpha)  # composite onto white
    return np.ascontiguousarray(np.round(np.clip(pixels, 0.0, 1.0) * 255.0).astype(np.uint8))


def _full_scale(dtype: np.dtype, name: str | Path) -> float:
    if dtype == np.uint8:
        return 255.0
    if dtype == np.uint16:
        return 65535.0
    if dtype in (np.float16, np.float32, np.float64):
        return 1.0
    raise UserError(f"{name}: unsupported pixel type {dtype} (expected 8/16-bit or float)")
