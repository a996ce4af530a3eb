"""Forward splatting (Niklaus & Liu 2020) and the colour trust that weights it.

Shared by the motion paths (interpolate.paths) and the shapes-world part finder
(interpolate.shapes_prior): a pixel moved onto another key counts as much as its colour matches
what it lands on (brightness constancy), so a pixel whose match failed leaves no ghost.
"""

from __future__ import annotations

import numpy as np

from interpolate.flow import warp

COLOUR_WEIGHT = 0.02  # trust exp(-COLOUR_WEIGHT * colour error, summed over RGB in 0..255)
HOLE_RADIUS = 3  # px around a hole that cv2.inpaint fills it from


def splat(
    image: np.ndarray, shift: np.ndarray, weight: np.ndarray, acc: np.ndarray, total: np.ndarray
) -> None:
    """Add `image` (h, w, c) moved by `shift` (h, w, 2) px into acc (h, w, c) and total (h, w),
    each pixel spread bilinearly over the four it lands between, scaled by `weight` (h, w)."""
    h, w = shift.shape[:2]
    gy, gx = np.mgrid[0:h, 0:w].astype(np.float64)
    tx, ty = gx + shift[..., 0], gy + shift[..., 1]
    x0, y0 = np.floor(tx).astype(np.int64), np.floor(ty).astype(np.int64)
    fx, fy = tx - x0, ty - y0
    values = image.reshape(h * w, -1)
    for dx, dy, share in (
        (0, 0, (1 - fx) * (1 - fy)),
        (1, 0, fx * (1 - fy)),
        (0, 1, (1 - fx) * fy),
        (1, 1, fx * fy),
    ):
        xs, ys = x0 + dx, y0 + dy
        inside = ((xs >= 0) & (xs < w) & (ys >= 0) & (ys < h)).ravel()
        where = (ys * w + xs).ravel()[inside]
        amount = (share * weight).ravel()[inside]
        total += np.bincount(where, amount, h * w).reshape(h, w)
        for c in range(values.shape[1]):
            acc[..., c] += np.bincount(where, amount * values[inside, c], h * w).reshape(h, w)


def landing(here: np.ndarray, there: np.ndarray, shift: np.ndarray) -> np.ndarray:
    """exp(-COLOUR_WEIGHT * colour error) (h, w) of image `here`'s pixels moved by `shift`
    (h, w, 2) px onto image `there`: 1 where a pixel lands on its own colour."""
    here = here.astype(np.float32)
    there = warp(there.astype(np.float32), shift.astype(np.float32))
    return np.exp(-COLOUR_WEIGHT * np.abs(here - there).sum(-1))
