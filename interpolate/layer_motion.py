"""Ground-truth motion of a layered scene: where every pixel of one frame is in another.

A layered clip (the `layers` world of `animatic dataset`) is a stack of image layers, each moved
per frame by a forward map from layer pixels p to frame pixels: y = A_f (p + D_f(p)), with A_f an
affine 2x3 matrix and D_f a smooth displacement, bilinear between the points of a small control
grid spread over the layer (non-rigid motion). Frames are drawn with the backward map (frame ->
layer), found by fixed-point iteration; each frame also stores which layer is on top at every pixel
(`ids`). From these, the motion of every pixel between any two frames is exact (`truth_motion`),
occluded or not, which is what the in-betweening model learns from.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

INVERSE_STEPS = 8  # fixed-point iterations of the backward map (D is small and smooth)


ROW = 4096  # points per row of the displacement lookup (cv2.remap's maps stay < 32767 wide)


@dataclass(frozen=True)
class LayerTrack:
    """One layer's motion over a clip: `size` (height, width) of its image in pixels, `affine`
    (frames, 2, 3) layer -> frame, `grid` (frames, gh, gw, 2) displacements in layer pixels at
    control points spread evenly from corner to corner of the layer."""

    size: tuple[int, int]
    affine: np.ndarray
    grid: np.ndarray

    def displacement(self, points: np.ndarray, frame: int) -> np.ndarray:
        """D_frame at layer points (..., 2) in pixels, bilinear between control points."""
        h, w = self.size
        grid = self.grid[frame].astype(np.float32)
        gh, gw = grid.shape[:2]
        gx = np.clip(points[..., 0] * (gw - 1) / max(w - 1, 1), 0, gw - 1).astype(np.float32)
        gy = np.clip(points[..., 1] * (gh - 1) / max(h - 1, 1), 0, gh - 1).astype(np.float32)
        shape = points.shape[:-1]
        n = gx.size  # remap maps are at most 32767 wide: points go in rows of ROW
        rows = -(-n // ROW)
        flat_x, flat_y = (
            np.pad(g.ravel(), (0, rows * ROW - n)).reshape(rows, ROW) for g in (gx, gy)
        )
        out = cv2.remap(grid, flat_x, flat_y, cv2.INTER_LINEAR, None, cv2.BORDER_REPLICATE)
        return out.reshape(-1, 2)[:n].reshape(*shape, 2)

    def forward(self, points: np.ndarray, frame: int) -> np.ndarray:
        """Frame pixels (..., 2) of layer points (..., 2) at `frame`."""
        moved = points + self.displacement(points, frame)
        a = self.affine[frame]
        return moved @ a[:, :2].T + a[:, 2]

    def backward(self, height: int, width: int, frame: int) -> np.ndarray:
        """Layer pixel (h, w, 2) under every frame pixel at `frame` (float32)."""
        a = np.vstack([self.affine[frame], [0.0, 0.0, 1.0]])
        inv = np.linalg.inv(a)[:2]
        ys, xs = np.mgrid[0:height, 0:width].astype(np.float32)
        q = np.stack([xs, ys], -1) @ inv[:, :2].T.astype(np.float32) + inv[:, 2].astype(np.float32)
        p = q.copy()
        if np.any(self.grid[frame]):
            for _ in range(INVERSE_STEPS):
                p = q - self.displacement(p, frame)
        return p.astype(np.float32)


def tracks_from_arrays(sizes: np.ndarray, affine: np.ndarray, grid: np.ndarray) -> list[LayerTrack]:
    """LayerTracks from stacked arrays: sizes (L, 2), affine (L, F, 2, 3), grid (L, F, gh, gw,
    2)."""
    return [LayerTrack((int(s[0]), int(s[1])), affine[i], grid[i]) for i, s in enumerate(sizes)]


def truth_motion(
    tracks: list[LayerTrack], ids: np.ndarray, frame: int, to: int | list[int]
) -> list[tuple[np.ndarray, np.ndarray]] | tuple[np.ndarray, np.ndarray]:
    """Motion from `frame` to frame `to` (or to each frame of a list): flow (h, w, 2) in pixels
    (where each pixel's point is at frame `to`) and visible (h, w) bool (that point is on top,
    inside the frame, at `to`). `ids` (frames, h, w) uint8 holds the top layer's index at every
    pixel of every frame."""
    targets = [to] if isinstance(to, int) else list(to)
    height, width = ids.shape[1:]
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float32)
    here = np.stack([xs, ys], -1)
    out = [(np.zeros((height, width, 2), np.float32), np.zeros((height, width), bool))
           for _ in targets]  # fmt: skip
    for layer in np.unique(ids[frame]):
        mask = ids[frame] == layer
        track = tracks[int(layer)]
        points = track.backward(height, width, frame)[mask]
        for target, (flow, visible) in zip(targets, out, strict=True):
            there = track.forward(points, target)
            flow[mask] = there - here[mask]
            col = np.round(there[:, 0]).astype(np.int64)
            row = np.round(there[:, 1]).astype(np.int64)
            inside = (col >= 0) & (col < width) & (row >= 0) & (row < height)
            on_top = np.zeros(len(points), bool)
            on_top[inside] = ids[target][row[inside], col[inside]] == layer
            visible[mask] = on_top
    return out[0] if isinstance(to, int) else out
