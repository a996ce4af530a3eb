"""The layers world: clips of real pictures moving as layers, with exact motion for every pixel.

A scene is a background under camera motion (pan, zoom, rotation), sometimes a parallax layer
(a cut-out of another picture that moves faster than the background, as nearer things do), and up
to MAX_SPRITES sprites (clip art, or cut-outs of photos) under affine motion (fast or slow,
entering and leaving the frame, turning, growing) and smooth non-rigid motion, occluding each
other, some with their brightness changing. In cel mode the background is paper or a flat
painted backdrop and the sprites are cel-shaded: a few flat fills inside dark ink lines, the
way 2D animators' keys look. Every scene is a pure function of (sources, seed, index); the motion
of each layer is recorded (interpolate.layer_motion), so any two frames' pixel motion is exact.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np

from interpolate.layer_motion import LayerTrack
from pipeline.layers.sources import SPRITE_SIDE, Sources, read_picture

GRID = 4  # control points per side of each layer's non-rigid displacement grid
MAX_SPRITES = 4
INK = np.array([0.08, 0.07, 0.1], np.float32)


@dataclass(frozen=True)
class Layer:
    """A picture (h, w, 4) premultiplied RGBA float32, its motion and brightness per frame."""

    image: np.ndarray
    track: LayerTrack
    gain: np.ndarray
    background: bool = False


@dataclass(frozen=True)
class Scene:
    layers: tuple[Layer, ...]
    cel: bool
    size: int
    frames: int

    def describe(self) -> str:
        kind = "cel" if self.cel else "photo"
        return f"layers world, {kind}, {len(self.layers) - 1} moving layers over a background"


# ---------------------------------------------------------------- motion


def _similarity(scale: float, angle: float, centre, position) -> np.ndarray:
    """2x3 map p -> scale R(angle) (p - centre) + position."""
    c, s = math.cos(angle) * scale, math.sin(angle) * scale
    m = np.array([[c, -s], [s, c]])
    return np.hstack([m, (np.asarray(position) - m @ np.asarray(centre))[:, None]])


def _path(rng: np.random.Generator, frames: int, start, speed: float) -> np.ndarray:
    """(frames, 2) positions: start + v t + a t^2 / 2 with |v| ~ speed px/frame."""
    t = np.arange(frames, dtype=np.float64)[:, None]
    angle = rng.uniform(0, 2 * math.pi)
    v = speed * np.array([math.cos(angle), math.sin(angle)])
    a = rng.normal(0, 0.15 * max(speed, 0.3) / max(frames, 1) * 4, 2)
    return np.asarray(start, np.float64) + v * t + 0.5 * a * t * t


def _wobble(rng: np.random.Generator, frames: int, amplitude: float) -> np.ndarray:
    """(frames, GRID, GRID, 2) smooth non-rigid displacements (sinusoids per control point)."""
    if amplitude <= 0:
        return np.zeros((frames, GRID, GRID, 2), np.float32)
    t = np.arange(frames)[:, None, None, None]
    freq = rng.uniform(0.02, 0.12, (1, GRID, GRID, 2))
    phase = rng.uniform(0, 2 * math.pi, (1, GRID, GRID, 2))
    amp = amplitude * rng.uniform(0.3, 1.0, (1, GRID, GRID, 2))
    return (amp * (np.sin(2 * math.pi * freq * t + phase) - np.sin(phase))).astype(np.float32)


def _gain(rng: np.random.Generator, frames: int) -> np.ndarray:
    if rng.random() > 0.3:
        return np.ones(frames, np.float32)
    t = np.arange(frames)
    depth, freq = rng.uniform(-0.2, 0.2), rng.uniform(0.005, 0.05)
    return (1 + depth * np.sin(2 * math.pi * freq * t)).astype(np.float32)


def _speed(rng: np.random.Generator, size: int) -> float:
    """Pixels per frame: still, slow or fast, in proportion to the frame size."""
    kind = rng.choice(3, p=[0.15, 0.5, 0.35])
    unit = size / 128
    return float([0.0, rng.uniform(0.1, 1.2), rng.uniform(1.2, 4.5)][kind] * unit)


# ---------------------------------------------------------------- pictures


def _fit(image: np.ndarray, side: float) -> np.ndarray:
    """`image` resized so its longer side is `side` px (area filter when shrinking)."""
    scale = side / max(image.shape[:2])
    size = (max(2, round(image.shape[1] * scale)), max(2, round(image.shape[0] * scale)))
    method = cv2.INTER_AREA if scale < 1 else cv2.INTER_CUBIC
    return np.clip(cv2.resize(image, size, interpolation=method), 0, 1)


def _blob(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """(h, w) soft mask of a random smooth blob that stays inside its box."""
    noise = cv2.resize(rng.random((5, 5)).astype(np.float32), (w, h), interpolation=cv2.INTER_CUBIC)
    ys, xs = np.mgrid[0:h, 0:w]
    r = np.hypot((xs - w / 2) / (w / 2), (ys - h / 2) / (h / 2))
    field = noise - 0.9 * r
    mask = (field > np.quantile(field, rng.uniform(0.45, 0.7))).astype(np.float32)
    return cv2.GaussianBlur(mask, (0, 0), 0.7)


def _square(rng: np.random.Generator, picture: np.ndarray, low: float, high: float):
    """A random square crop of `picture`, low..high of its shorter side (at least 16 px)."""
    h, w = picture.shape[:2]
    crop = min(h, w, max(16, int(min(h, w) * rng.uniform(low, high))))
    top, left = int(rng.integers(0, h - crop + 1)), int(rng.integers(0, w - crop + 1))
    return picture[top : top + crop, left : left + crop]


def _cutout(rng: np.random.Generator, picture: np.ndarray, side: int) -> np.ndarray:
    """A blob-shaped piece of an opaque picture, as premultiplied RGBA."""
    piece = _fit(_square(rng, picture, 0.2, 0.6)[..., :3], side)
    alpha = _blob(rng, *piece.shape[:2])
    return np.dstack([piece * alpha[..., None], alpha]).astype(np.float32)


def cel_shade(rng: np.random.Generator, sprite: np.ndarray) -> np.ndarray:
    """A sprite as cel animation: its colours cut to a few flat fills, hard edges, dark ink
    around the outside and between fills."""
    alpha = sprite[..., 3]
    solid = alpha > 0.5
    rgb = np.where(solid[..., None], sprite[..., :3] / np.maximum(alpha, 1e-3)[..., None], 1.0)
    labels = np.zeros(alpha.shape, np.int32)
    pixels = rgb[solid].astype(np.float32)
    fills = rgb.copy()
    if len(pixels) >= 8:
        k = int(min(rng.integers(2, 6), len(pixels)))
        criteria = (cv2.TERM_CRITERIA_MAX_ITER + cv2.TERM_CRITERIA_EPS, 10, 1e-3)
        cv2.setRNGSeed(int(rng.integers(2**31)))
        _, lab, centres = cv2.kmeans(pixels, k, None, criteria, 1, cv2.KMEANS_PP_CENTERS)
        labels[solid] = lab.ravel() + 1
        fills[solid] = centres[lab.ravel()]
    width = max(1, round(max(alpha.shape) / 64))
    kernel = np.ones((2 * width + 1, 2 * width + 1), np.uint8)
    outside = cv2.morphologyEx(solid.astype(np.uint8), cv2.MORPH_GRADIENT, kernel) > 0
    inner = cv2.morphologyEx(labels.astype(np.float32), cv2.MORPH_GRADIENT, np.ones((3, 3))) > 0
    ink = outside | (inner & solid)
    cover = (solid | ink).astype(np.float32)
    colour = np.where(ink[..., None], INK, fills)
    cover = cv2.GaussianBlur(cover, (0, 0), 0.5)
    return np.dstack([colour * cover[..., None], cover]).astype(np.float32)


def paper(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """Off-white paper with a faint grain (opaque RGBA), or a flat painted backdrop."""
    if rng.random() < 0.75:
        base = np.array([rng.uniform(0.9, 1.0), rng.uniform(0.88, 0.99), rng.uniform(0.82, 0.97)])
        grain = 0.012 * rng.random()
    else:
        base = rng.uniform(0.2, 0.95, 3)
        grain = 0.0
    noise = rng.normal(0, 1, (h, w, 1)).astype(np.float32) * grain
    rgb = np.clip(base[None, None].astype(np.float32) + noise, 0, 1)
    return np.dstack([rgb, np.ones((h, w), np.float32)]).astype(np.float32)


# ---------------------------------------------------------------- scenes


def _picture_crop(rng, sources: Sources, side: int) -> np.ndarray:
    """A random crop of a background picture, `side` px square, opaque."""
    image = _fit(_square(rng, read_picture(sources.background(rng)), 0.3, 1.0), side)
    image = cv2.resize(image, (side, side), interpolation=cv2.INTER_LINEAR)
    image[..., 3] = 1.0
    return image


def _collage(rng, sources: Sources, side: int) -> np.ndarray:
    """A picture crop with still sprites and cut-outs pasted on: texture and edges everywhere."""
    image = _picture_crop(rng, sources, side)
    for _ in range(int(rng.integers(3, 11))):
        piece = _sprite_picture(rng, sources, int(side * rng.uniform(0.1, 0.45)), False)
        h, w = piece.shape[:2]
        top, left = (
            int(rng.integers(-h // 2, side - h // 2)),
            int(rng.integers(-w // 2, side - w // 2)),
        )
        y0, x0, y1, x1 = max(top, 0), max(left, 0), min(top + h, side), min(left + w, side)
        if y1 <= y0 or x1 <= x0:
            continue
        part = piece[y0 - top : y1 - top, x0 - left : x1 - left]
        image[y0:y1, x0:x1] = part + (1 - part[..., 3:]) * image[y0:y1, x0:x1]
    return image


def _background(rng, sources: Sources, size: int, frames: int, cel: bool) -> Layer:
    """The bottom layer, larger than the frame, under a camera that pans, zooms and turns."""
    side = int(size * rng.uniform(1.4, 2.2))
    if cel:
        image = paper(rng, side, side)
    elif rng.random() < 0.5:
        image = _picture_crop(rng, sources, side)
    else:
        image = _collage(rng, sources, side)
    still = cel and rng.random() < 0.5
    speed = 0.0 if still else _speed(rng, size) * 0.8
    centre = np.array([image.shape[1] / 2, image.shape[0] / 2])
    path = _path(rng, frames, centre + rng.uniform(-0.1, 0.1, 2) * side, speed)
    zoom = 0.0 if still or rng.random() < 0.5 else rng.uniform(-0.01, 0.01)
    turn = 0.0 if still or rng.random() < 0.6 else rng.uniform(-0.004, 0.004)
    affine = np.stack(
        [
            _similarity(math.exp(zoom * f), turn * f, path[f], (size / 2, size / 2))
            for f in range(frames)
        ]
    )
    grid = np.zeros((frames, GRID, GRID, 2), np.float32)
    track = LayerTrack(image.shape[:2], affine, grid)
    return Layer(image, track, _gain(rng, frames) if not cel else np.ones(frames, np.float32), True)


def _sprite_picture(rng, sources: Sources, side: int, cel: bool) -> np.ndarray:
    """Clip art (trimmed to what it covers), or a blob-shaped cut-out of a picture; clip art
    that covers its whole box is cut out the same way."""
    path = sources.sprite(rng)
    if path is not None and (cel or rng.random() < 0.7):
        picture = read_picture(path, SPRITE_SIDE)
        ys, xs = np.nonzero(picture[..., 3] > 0.02)
        if len(ys) >= 16 and np.mean(picture[..., 3] < 0.5) >= 0.05:
            sprite = _fit(picture[ys.min() : ys.max() + 1, xs.min() : xs.max() + 1], side)
            return cel_shade(rng, sprite) if cel else sprite
        sprite = _cutout(rng, picture, side)
    else:
        sprite = _cutout(rng, read_picture(sources.background(rng)), side)
    return cel_shade(rng, sprite) if cel else sprite


def _sprite(rng, sources: Sources, size: int, frames: int, cel: bool, parallax=None) -> Layer:
    """A moving sprite; with `parallax` (the background's path), a cut-out that follows the
    camera faster than the background does."""
    side = int(size * (rng.uniform(0.6, 1.1) if parallax is not None else rng.uniform(0.12, 0.6)))
    if parallax is not None:
        picture = read_picture(sources.background(rng))
        image = _cutout(rng, picture, side)
    else:
        image = _sprite_picture(rng, sources, side, cel)
    h, w = image.shape[:2]
    start = rng.uniform(-0.15, 1.15, 2) * size
    if parallax is None:
        path = _path(rng, frames, start, _speed(rng, size))
    else:
        factor = rng.uniform(1.2, 2.0)
        path = start + factor * (parallax[0] - parallax)
    turn = 0.0 if rng.random() < 0.5 else rng.uniform(-0.04, 0.04)
    grow = 0.0 if rng.random() < 0.6 else rng.uniform(-0.012, 0.012)
    scale0 = rng.uniform(0.8, 1.2)
    affine = np.stack(
        [
            _similarity(scale0 * math.exp(grow * f), turn * f, (w / 2, h / 2), path[f])
            for f in range(frames)
        ]
    )
    bend = 0.0 if rng.random() < 0.5 else rng.uniform(0.02, 0.07) * max(h, w)
    track = LayerTrack((h, w), affine, _wobble(rng, frames, bend))
    return Layer(image, track, _gain(rng, frames))


def random_scene(
    rng: np.random.Generator, sources: Sources, size: int, frames: int, cel: bool
) -> Scene:
    """One scene: background, maybe a parallax layer, 0..MAX_SPRITES sprites (bottom to top)."""
    background = _background(rng, sources, size, frames, cel)
    layers = [background]
    if not cel and rng.random() < 0.35:
        camera = background.track.affine[:, :, 2]
        layers.append(_sprite(rng, sources, size, frames, cel, parallax=camera))
    count = int(rng.choice(MAX_SPRITES + 1, p=[0.08, 0.3, 0.3, 0.2, 0.12]))
    layers += [_sprite(rng, sources, size, frames, cel) for _ in range(count)]
    return Scene(tuple(layers), cel, size, frames)


def render_frame(scene: Scene, frame: int) -> tuple[np.ndarray, np.ndarray]:
    """Frame `frame`: (size, size, 3) uint8 RGB and (size, size) uint8 id of the top layer."""
    size = scene.size
    out = np.zeros((size, size, 3), np.float32)
    ids = np.zeros((size, size), np.uint8)
    for index, layer in enumerate(scene.layers):
        where = layer.track.backward(size, size, frame)
        border = cv2.BORDER_REFLECT_101 if layer.background else cv2.BORDER_CONSTANT
        rgba = cv2.remap(layer.image, where[..., 0], where[..., 1], cv2.INTER_LINEAR, None, border)
        alpha = rgba[..., 3:]
        out = rgba[..., :3] * layer.gain[frame] + (1 - alpha) * out
        ids[alpha[..., 0] >= 0.5] = index
    return np.clip(np.round(out * 255), 0, 255).astype(np.uint8), ids


def render_scene(scene: Scene) -> tuple[np.ndarray, np.ndarray]:
    """All frames (f, size, size, 3) uint8 and top-layer ids (f, size, size) uint8."""
    drawn = [render_frame(scene, f) for f in range(scene.frames)]
    return np.stack([d[0] for d in drawn]), np.stack([d[1] for d in drawn])


def motion_arrays(scene: Scene) -> dict[str, np.ndarray]:
    """The layers' motion as arrays (interpolate.layer_motion.tracks_from_arrays reads them)."""
    tracks = [layer.track for layer in scene.layers]
    return {
        "sizes": np.array([t.size for t in tracks], np.int32),
        "affine": np.stack([t.affine for t in tracks]).astype(np.float64),
        "grid": np.stack([t.grid for t in tracks]).astype(np.float32),
    }
