"""Frames at the keys' own resolution from motion made at a working resolution.

No small frame is ever scaled up to be the output: the motion (flows to both keys and the blend,
interpolate.general.motion) is resized to the keys' size, and each output pixel is the keys' own
pixels, warped with bicubic interpolation (sharper than bilinear: it keeps the keys' detail) and
blended. A key that cannot supply a pixel (its flow points outside the frame) gives way to the
other; where both keys agree and the motion is still, the output is the keys' exact colours
(`STILL_PX`, `AGREE`), so static backgrounds and held regions never drift. Works on float32
(h, w, c) images of any channel count (RGB, premultiplied RGBA, linear EXR values).
"""

from __future__ import annotations

import cv2
import numpy as np

from interpolate.general.motion import FLOW_UNIT

STILL_PX = 2.0  # flows shorter than this (output pixels) count as still...
AGREE = 1.5 / 255  # ...where the keys differ by at most this within STILL_PX around a pixel


def resize_motion(motion: np.ndarray, height: int, width: int) -> np.ndarray:
    """Motion (5, h, w) in working-resolution motion units -> (height, width, 5) with flows in
    output pixels (each axis scaled by its own size ratio)."""
    h, w = motion.shape[1:]
    full = cv2.resize(
        np.ascontiguousarray(motion.transpose(1, 2, 0)), (width, height),
        interpolation=cv2.INTER_LINEAR,
    )  # fmt: skip
    scale = np.array([width / w, height / h, width / w, height / h], np.float32) * FLOW_UNIT
    full[..., :4] *= scale
    return full


def _warp(image: np.ndarray, flow: np.ndarray, grid: tuple[np.ndarray, np.ndarray]):
    """Bicubic backward warp of (h, w, c) float32, and where the sample lies inside the frame."""
    x, y = grid[0] + flow[..., 0], grid[1] + flow[..., 1]
    h, w = image.shape[:2]
    inside = (x >= -0.5) & (x <= w - 0.5) & (y >= -0.5) & (y <= h - 0.5)
    out = cv2.remap(image, x, y, cv2.INTER_CUBIC, None, cv2.BORDER_REPLICATE)
    return out.reshape(image.shape), inside


def keys_agree(k0: np.ndarray, k1: np.ndarray) -> np.ndarray:
    """(h, w) bool: the keys agree at and within STILL_PX of each pixel. Nothing that moves
    less than STILL_PX can show there but what both keys show, so a still pixel there is the
    keys' own colour."""
    diff = np.abs(k0 - k1)
    diff = diff.max(-1) if diff.ndim == 3 else diff
    side = 2 * int(np.ceil(STILL_PX)) + 1
    return cv2.dilate(diff, np.ones((side, side), np.uint8)) <= AGREE


def make_frame(
    k0: np.ndarray, k1: np.ndarray, motion: np.ndarray, t: float, agree: np.ndarray | None = None
) -> np.ndarray:
    """The in-between at time t from keys (h, w, c) float32 and full-size motion (h, w, 5)."""
    h, w = k0.shape[:2]
    grid = np.meshgrid(np.arange(w, dtype=np.float32), np.arange(h, dtype=np.float32))
    left, in0 = _warp(k0, motion[..., 0:2], grid)
    right, in1 = _warp(k1, motion[..., 2:4], grid)
    m = motion[..., 4]
    w0 = (1 - t) * np.clip(1 + m, 0, 1) * in0
    w1 = t * np.clip(1 - m, 0, 1) * in1
    total = w0 + w1
    a = np.where(total > 1e-4, w0 / np.maximum(total, 1e-4), 1 - t).astype(np.float32)
    if left.ndim == 3:
        a = a[..., None]
    out = a * left + (1 - a) * right
    if agree is not None:
        still = agree & (np.abs(motion[..., :4]).max(-1) < STILL_PX)
        exact = (1 - t) * k0 + t * k1
        out[still] = exact[still]
    return out
