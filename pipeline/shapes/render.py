"""Anti-aliased rendering of shapes-world scenes at any square size (RGB uint8, h w 3).

Shapes are filled at 4x with sub-pixel vertices, then area-averaged down: edges get coverage
weights, interiors keep the palette colour exactly.
"""

from __future__ import annotations

import math

import cv2
import numpy as np

from .world import BACKGROUNDS, COLOURS, FPS, Scene, SceneObject, clip_centres

SUPERSAMPLE = 4
_SHIFT = 6  # fixed-point fraction bits for OpenCV's sub-pixel drawing
_ONE = 1 << _SHIFT


def shape_outline(shape: str, x: float, y: float, radius: float) -> np.ndarray:
    """Vertices (k, 2) in canvas units of a square or an up-pointing equilateral triangle."""
    if shape == "square":
        h = radius / math.sqrt(2.0)
        return np.array([[x - h, y - h], [x + h, y - h], [x + h, y + h], [x - h, y + h]])
    if shape == "triangle":
        dx = radius * math.sqrt(3.0) / 2.0
        return np.array([[x, y - radius], [x + dx, y + radius / 2.0], [x - dx, y + radius / 2.0]])
    raise ValueError(f"{shape!r} has no polygon outline")


def _filled(background: str, height: int, width: int) -> np.ndarray:
    """A canvas of the background colour (one row, then whole rows: far faster than per pixel)."""
    row = np.tile(np.array(BACKGROUNDS[background], dtype=np.uint8), (width, 1))
    canvas = np.empty((height, width, 3), dtype=np.uint8)
    canvas[:] = row
    return canvas


def _draw(canvas: np.ndarray, obj: SceneObject, x: float, y: float, scale: int, origin) -> None:
    """Fill one object into a supersampled canvas whose pixel (0, 0) is pixel `origin` of a
    scale x scale canvas; pixel j covers [j, j + 1) in canvas units."""
    offset = np.array(origin, dtype=np.int64) * _ONE

    def fixed(points: np.ndarray) -> np.ndarray:
        # OpenCV puts pixel centres at integer coordinates, hence the half-pixel shift; the
        # offset is a whole number of pixels, so cropping never changes the rasterisation.
        return np.round((points * scale - 0.5) * _ONE).astype(np.int64) - offset

    colour = COLOURS[obj.colour]
    # OpenCV fills every pixel the outline touches, which makes a shape half a pixel too large all
    # round; moving each edge in by half a (4x) pixel makes the drawn area the true area.
    inset = 0.5 / scale
    if obj.shape == "circle":
        cx, cy = (int(v) for v in fixed(np.array([x, y])))
        r = int(round((obj.radius - inset) * scale * _ONE))
        cv2.circle(canvas, (cx, cy), r, colour, thickness=-1, lineType=cv2.LINE_8, shift=_SHIFT)
    else:
        # Circumradius lost per unit of edge inset: sqrt(2) for a square, 2 for a triangle.
        radius = obj.radius - inset * (math.sqrt(2.0) if obj.shape == "square" else 2.0)
        points = fixed(shape_outline(obj.shape, x, y, radius)).astype(np.int32)
        cv2.fillPoly(canvas, [points], colour, lineType=cv2.LINE_8, shift=_SHIFT)


def render_frame(
    background: str,
    objects: tuple[SceneObject, ...] | list[SceneObject],
    centres: np.ndarray | None,
    size: int,
) -> np.ndarray:
    """One frame (size, size, 3) uint8 RGB; centres (n, 2) override the objects' own x, y.

    Only the box around the objects is drawn at 4x and area-averaged: the rest is background,
    and every 4x4 block averages on its own, so the result equals drawing the whole canvas.
    """
    frame = _filled(background, size, size)
    if centres is None:
        centres = np.array([[o.x, o.y] for o in objects], dtype=np.float64).reshape(-1, 2)
    places = [(obj, float(x), float(y)) for obj, (x, y) in zip(objects, centres, strict=True)]
    boxes = []
    for obj, x, y in places:
        x0, y0 = (math.floor((v - obj.radius) * size) - 1 for v in (x, y))
        x1, y1 = (math.ceil((v + obj.radius) * size) + 1 for v in (x, y))
        boxes.append((max(x0, 0), max(y0, 0), min(x1, size), min(y1, size)))
    boxes = [b for b in boxes if b[0] < b[2] and b[1] < b[3]]  # objects wholly off the canvas
    if not boxes:
        return frame
    x0, y0 = min(b[0] for b in boxes), min(b[1] for b in boxes)
    x1, y1 = max(b[2] for b in boxes), max(b[3] for b in boxes)
    ss = SUPERSAMPLE
    patch = _filled(background, (y1 - y0) * ss, (x1 - x0) * ss)
    for obj, x, y in places:
        _draw(patch, obj, x, y, size * ss, (x0 * ss, y0 * ss))
    frame[y0:y1, x0:x1] = cv2.resize(patch, (x1 - x0, y1 - y0), interpolation=cv2.INTER_AREA)
    return frame


def render_still(scene: Scene, size: int) -> np.ndarray:
    """The scene with every object at its own centre: (size, size, 3) uint8 RGB."""
    return render_frame(scene.background, scene.objects, None, size)


def render_clip(
    scene: Scene, size: int, frames: int, fps: float = FPS, centres: np.ndarray | None = None
) -> np.ndarray:
    """The scene moving under the world's physics: (frames, size, size, 3) uint8 RGB."""
    if centres is None:
        centres = clip_centres(scene, frames, fps)
    return np.stack([render_frame(scene.background, scene.objects, c, size) for c in centres])
