"""Reading keys for `animatic tween`: from files, a pattern, a folder, an exposure sheet or
arrays, as frames of pipeline.media's contract at one depth and channel count."""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np

from keyframe.errors import UserError
from pipeline import media, sequences
from pipeline.sequences import KeyFile


def _resize_at(frame: np.ndarray, depth: str, height: int, width: int) -> np.ndarray:
    """Resize a frame in its source's integers (8/16-bit), so a resized key is what resizing
    its file would give; float frames in float."""
    if depth in ("half", "float"):
        return resize(frame, height, width)
    full = np.float32(255 if depth == "8-bit" else 65535)
    return resize(media.quantize(frame, depth), height, width).astype(np.float32) / full


def resize(image: np.ndarray, height: int, width: int) -> np.ndarray:
    """Resize (area when shrinking, cubic when enlarging); same size: unchanged."""
    if image.shape[:2] == (height, width):
        return image
    shrink = height * width < image.shape[0] * image.shape[1]
    method = cv2.INTER_AREA if shrink else cv2.INTER_CUBIC
    out = cv2.resize(image, (width, height), interpolation=method)
    return out.reshape(height, width, *image.shape[2:])


def key_files(keys, xsheet) -> tuple[list[KeyFile], list[np.ndarray] | None, tuple | None]:
    """Key files (and arrays, for keys given as arrays) and the exposure sheet's timing."""
    if xsheet is not None:
        if keys:
            raise UserError("--xsheet lists the keys; give no key files beside it")
        files, frames, holds = sequences.read_xsheet(xsheet)
        return files, None, (frames, holds)
    if isinstance(keys, (str, os.PathLike)):
        keys = [keys]
    keys = list(keys)
    if not keys:
        raise UserError("no keys: give key images, a pattern, a folder, or --xsheet")
    arrays = [isinstance(k, np.ndarray) for k in keys]
    if any(arrays) and not all(arrays):
        raise UserError("keys: give all keys as arrays or all as files, not a mix")
    if all(arrays):
        files = [KeyFile(Path(f"<array {i}>"), "", None, 0, "") for i in range(len(keys))]
        return files, keys, None
    return sequences.find_keys([os.fspath(k) for k in keys]), None, None


def _array_frame(array: np.ndarray) -> tuple[np.ndarray, str]:
    """A key given as an array, as a file would hold it (uint8/uint16 with straight alpha, or
    float premultiplied) -> (frame, depth)."""
    if array.ndim == 2:
        array = array[:, :, None]
    if array.ndim != 3 or array.shape[2] not in (1, 3, 4):
        raise UserError(f"key array of shape {array.shape}: expected (h, w, 3) or (h, w, 4)")
    array = np.repeat(array, 3, axis=2) if array.shape[2] == 1 else array
    depth = {np.uint8: "8-bit", np.uint16: "16-bit", np.float16: "half", np.float32: "float",
             np.float64: "float"}  # fmt: skip
    kind = depth.get(array.dtype.type)
    if kind is None:
        raise UserError(f"key array of type {array.dtype}: expected uint8, uint16 or float")
    if kind in ("half", "float"):
        return np.ascontiguousarray(array, dtype=np.float32), kind
    pixels = array.astype(np.float32) / np.float32(255 if kind == "8-bit" else 65535)
    if pixels.shape[2] == 4:
        pixels[..., :3] *= pixels[..., 3:]
    return pixels, kind


def read_keys(files: Sequence[KeyFile], arrays=None) -> tuple[list[np.ndarray], str, list[bool]]:
    """Every key as a frame (pipeline.media's contract), their common depth, and whether each is
    unchanged from its file (so it may be copied byte for byte). Keys of another size than the
    first are resized to it (with a warning); mixed depths or channel counts are an error."""
    read = [_array_frame(a) for a in arrays] if arrays is not None else None
    read = read or [media.read_frame(f.path) for f in files]
    pixels = [p for p, _ in read]
    first = media.describe(read[0][1], pixels[0].shape[2])
    for file, (frame, depth) in zip(files, read, strict=True):
        if media.describe(depth, frame.shape[2]) != first:
            raise UserError(
                f"{file.path}: {media.describe(depth, frame.shape[2])}, but {files[0].path.name} "
                f"is {first}; give keys of one depth and channel count"
            )
    height, width = pixels[0].shape[:2]
    copyable = [arrays is None] * len(pixels)
    for i, (file, frame) in enumerate(zip(files, pixels, strict=True)):
        if frame.shape[:2] != (height, width):
            print(
                f"animatic tween: warning: {file.path} is {frame.shape[1]}x{frame.shape[0]}, "
                f"resized to {width}x{height} (the first key's size)",
                file=sys.stderr,
            )
            pixels[i], copyable[i] = _resize_at(frame, read[0][1], height, width), False
    return pixels, read[0][1], copyable
