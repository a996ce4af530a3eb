"""Fitting keys to a trained model's square frame and back, for `animatic tween --fit`.

letterbox: the whole picture, scaled into the square with the edge pixels repeated as padding,
output at the keys' size; crop: the centre square, output square. Key frames of the output are
the keys' own pixels (cropped with crop), never a round trip through the model's frame.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np


@dataclass(frozen=True)
class Fit:
    """Where the user's picture sits in the model's square frame, and the output's size."""

    size: int  # the model's frame side
    box: tuple[int, int, int, int]  # top, left, height, width of the picture in the model frame
    crop: tuple[int, int, int, int]  # top, left, height, width of the part of the key used
    out_size: tuple[int, int]  # output (height, width)


def make_fit(height: int, width: int, size: int, mode: str) -> Fit:
    """Where a (height, width) key goes in a model frame of side ``size``: "letterbox" or "crop"."""
    if mode == "crop":
        side = min(height, width)
        crop = ((height - side) // 2, (width - side) // 2, side, side)
        return Fit(size, (0, 0, size, size), crop, (side, side))
    scale = size / max(height, width)
    new_h, new_w = max(1, round(height * scale)), max(1, round(width * scale))
    box = ((size - new_h) // 2, (size - new_w) // 2, new_h, new_w)
    return Fit(size, box, (0, 0, height, width), (height, width))


def _resize(image: np.ndarray, height: int, width: int) -> np.ndarray:
    if image.shape[:2] == (height, width):
        return image
    shrink = height * width < image.shape[0] * image.shape[1]
    return cv2.resize(
        image, (width, height), interpolation=cv2.INTER_AREA if shrink else cv2.INTER_CUBIC
    )


def to_model(image: np.ndarray, fit: Fit) -> np.ndarray:
    """A key as the model sees it: (size, size, 3) uint8; letterbox margins repeat the edges."""
    top, left, h, w = fit.crop
    picture = _resize(image[top : top + h, left : left + w], fit.box[2], fit.box[3])
    bt, bl, bh, bw = fit.box
    return cv2.copyMakeBorder(
        picture, bt, fit.size - bt - bh, bl, fit.size - bl - bw, cv2.BORDER_REPLICATE
    )


def from_model(frame: np.ndarray, fit: Fit) -> np.ndarray:
    """A generated (size, size, 3) frame back at the output size (margins cut away)."""
    top, left, h, w = fit.box
    return np.ascontiguousarray(_resize(frame[top : top + h, left : left + w], *fit.out_size))


def key_output(image: np.ndarray, fit: Fit) -> np.ndarray:
    """A key's own pixels as they appear in the output."""
    top, left, h, w = fit.crop
    return np.ascontiguousarray(image[top : top + h, left : left + w])
