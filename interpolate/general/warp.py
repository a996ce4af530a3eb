"""Frames at the keys' own resolution from motion made at a working resolution.

No small frame is ever scaled up to be the output: the flows to both keys are resized to the
keys' size, and each output pixel is the keys' own pixels, warped with bicubic interpolation
(sharper than bilinear: it keeps the keys' detail) and blended. The blend (which key shows a
pixel, interpolate.general.motion) is smooth, so it is worked out at the working resolution and
resized: a key whose flow points outside the frame gives way to the other. Where both keys agree
and the motion is still, the output is the keys' exact colours (`STILL_PX`, `AGREE`), so static
backgrounds and held regions never drift. Works on float32 (h, w, c) images of up to four
channels (RGB, premultiplied RGBA, linear EXR values).
"""

from __future__ import annotations

import cv2
import numpy as np

from interpolate.general.motion import FLOW_UNIT

STILL_PX = 2.0  # flows shorter than this (output pixels) count as still...
AGREE = 1.5 / 255  # ...where the keys differ by at most this within STILL_PX around a pixel


def keys_agree(k0: np.ndarray, k1: np.ndarray) -> np.ndarray:
    """(h, w) bool: the keys agree at and within STILL_PX of each pixel. Nothing that moves
    less than STILL_PX can show there but what both keys show, so a still pixel there is the
    keys' own colour."""
    diff = np.abs(k0 - k1)
    diff = diff.max(-1) if diff.ndim == 3 else diff
    side = 2 * int(np.ceil(STILL_PX)) + 1
    return cv2.dilate(diff, np.ones((side, side), np.uint8)) <= AGREE


def _resize(field: np.ndarray, height: int, width: int, method=cv2.INTER_LINEAR) -> np.ndarray:
    return cv2.resize(np.ascontiguousarray(field), (width, height), interpolation=method)


def small_maps(motion: np.ndarray, t: float, height: int, width: int):
    """From working-resolution motion (5, h, w) in motion units: the flows in output pixels
    (h, w, 4), the left key's blend weight (h, w) and where the motion is still (h, w) bool."""
    h, w = motion.shape[1:]
    scale = np.array([width / w, height / h] * 2, np.float32) * FLOW_UNIT
    flows = motion[:4].transpose(1, 2, 0) * scale
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float32) + 0.5
    inside = []
    for k in (0, 2):
        x, y = xs + flows[..., k] * w / width, ys + flows[..., k + 1] * h / height
        inside.append((x >= 0) & (x <= w) & (y >= 0) & (y <= h))
    w0 = (1 - t) * np.clip(1 + motion[4], 0, 1) * inside[0]
    w1 = t * np.clip(1 - motion[4], 0, 1) * inside[1]
    total = w0 + w1
    a = np.where(total > 1e-4, w0 / np.maximum(total, 1e-4), 1 - t).astype(np.float32)
    still = np.abs(flows).max(-1) < STILL_PX
    return flows, a, still


def make_frame(
    k0: np.ndarray, k1: np.ndarray, motion: np.ndarray, t: float, agree: np.ndarray | None = None
) -> np.ndarray:
    """The in-between at time t from keys (h, w, c) float32 and working-resolution motion
    (5, h', w') in motion units; `agree` from `keys_agree` holds still regions exact."""
    height, width = k0.shape[:2]
    flows, a, still = small_maps(motion, t, height, width)
    flows = _resize(flows, height, width)
    gx = np.arange(width, dtype=np.float32)[None, :]
    gy = np.arange(height, dtype=np.float32)[:, None]
    border = cv2.BORDER_REPLICATE
    left = cv2.remap(k0, gx + flows[..., 0], gy + flows[..., 1], cv2.INTER_CUBIC, None, border)
    right = cv2.remap(k1, gx + flows[..., 2], gy + flows[..., 3], cv2.INTER_CUBIC, None, border)
    a = _resize(a, height, width)
    if left.ndim == 3:
        a = a[..., None]
    out = right + a * (left.reshape(k0.shape) - right.reshape(k1.shape))
    if agree is not None:
        keep = agree & _resize(still.astype(np.uint8), height, width, cv2.INTER_NEAREST).astype(
            bool
        )
        out[keep] = ((1 - t) * k0[keep] + t * k1[keep]) if t else k0[keep]
    return out
