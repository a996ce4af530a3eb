"""The automatic judge: does a generated frame show what its shapes-world caption says?

Purely from pixels. The background is the nearest palette entry to the border's median colour.
Every pixel is explained as a mix of the background and one object colour (anti-aliased edges are
such mixes), which gives it a colour label and an opacity alpha. Pixels with enough alpha form
regions; a region holding two object colours (one object drawn over another) is split by colour.
Each blob's alpha-weighted centroid is its centre (for the up-pointing equilateral triangle the
centroid *is* the circumcentre), its alpha mass its area, and its shape the best of the three
outlines redrawn, anti-aliased (sharp or slightly blurred), with that centre and area: analysis
by synthesis reads the shape from every edge pixel, so it holds at 32 px and on soft frames. The
circumradius follows from area and shape; size and position words from the spec's sizes and grid.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np

from keyframe.errors import UserError
from pipeline.shapes import BACKGROUNDS, COLOURS, SHAPES, SIZES, Description, ObjectWords
from pipeline.shapes.captions import parse_caption
from pipeline.shapes.world import position_word

MIN_SIZE = 32
MIN_ALPHA = 0.25  # a pixel at least this opaque (over the background) belongs to a blob
MIN_OPACITY = 0.5  # a blob at least this opaque is an object (fainter: noise or a ghost)
# A blob needs this share of the smallest object's area (a small triangle) to count.
MIN_BLOB_SHARE = 0.3
# Area of each shape as a multiple of its circumradius squared.
AREA_FACTOR: dict[str, float] = {
    "circle": math.pi,
    "square": 2.0,
    "triangle": 3.0 * math.sqrt(3.0) / 4.0,
}
ATTRIBUTES: tuple[str, ...] = ("background", "count", "colour", "shape", "size", "position")

_COLOUR_NAMES = tuple(COLOURS)
_PALETTE = np.array([COLOURS[c] for c in _COLOUR_NAMES], dtype=np.float32)
_BACKGROUND_NAMES = tuple(BACKGROUNDS)
_BACKGROUND_RGB = np.array([BACKGROUNDS[b] for b in _BACKGROUND_NAMES], dtype=np.float32)
_SIZE_NAMES = tuple(sorted(SIZES, key=SIZES.get))
# Size words split at the geometric means of neighbouring radii.
_SIZE_EDGES = [
    math.sqrt(SIZES[a] * SIZES[b]) for a, b in zip(_SIZE_NAMES, _SIZE_NAMES[1:], strict=False)
]
_SAMPLES = 8  # coverage sample points per pixel side
_CORE_ALPHA = 0.8  # pixels this opaque (against the palette colour) give an object's own colour
# Outlines are also tried blurred (Gaussian sigma in pixels): generated frames are often soft.
_BLUR_LEVELS = (0.0, 0.7, 1.4)
_WINDOW_MARGIN = 4
_NEAR = np.ones((5, 5), np.uint8)  # a blob's soft edge: pixels within 2 px of it


@dataclass(frozen=True)
class Detection:
    """One object seen in a frame. Lengths and centre in canvas widths, area in canvas areas."""

    colour: str
    shape: str
    size_word: str
    radius: float
    cx: float
    cy: float
    area: float
    opacity: float = 1.0  # 90th percentile of the blob's alpha: below 1 for faded ghosts
    fit_error: float = 0.0  # L1 misfit of the chosen outline, relative to the blob's area

    @property
    def position(self) -> str:
        return position_word(self.cx, self.cy)


@dataclass(frozen=True)
class ObjectVerdict:
    """One object of the description against the detection matched to it (None: missing)."""

    expected: ObjectWords
    detected: Detection | None
    colour: bool
    shape: bool
    size: bool
    position: bool

    @property
    def correct(self) -> bool:
        return self.colour and self.shape and self.size and self.position


@dataclass(frozen=True)
class Verdict:
    """A frame judged against a still description: per attribute, and `correct` overall."""

    background_expected: str
    background_seen: str
    count_expected: int
    count_seen: int
    objects: tuple[ObjectVerdict, ...]
    detections: tuple[Detection, ...]

    @property
    def background(self) -> bool:
        return self.background_seen == self.background_expected

    @property
    def count(self) -> bool:
        return self.count_seen == self.count_expected

    @property
    def correct(self) -> bool:
        return self.background and self.count and all(o.correct for o in self.objects)

    @property
    def failures(self) -> tuple[str, ...]:
        """The attributes that failed, in ATTRIBUTES order (empty when correct)."""
        failed = {"background": not self.background, "count": not self.count}
        for attribute in ATTRIBUTES[2:]:
            failed[attribute] = not all(getattr(o, attribute) for o in self.objects)
        return tuple(a for a in ATTRIBUTES if failed[a])


# ------------------------------------------------------------------------------- helpers


def _check_frame(rgb: np.ndarray) -> int:
    if not (isinstance(rgb, np.ndarray) and rgb.dtype == np.uint8 and rgb.ndim == 3):
        shape = getattr(rgb, "shape", None)
        raise ValueError(f"expected a uint8 (h, w, 3) RGB frame, got {type(rgb).__name__} {shape}")
    h, w, c = rgb.shape
    if c != 3 or h != w:
        raise UserError(f"the judge needs square RGB frames, got {h}x{w} with {c} channels")
    if h < MIN_SIZE:
        raise UserError(f"the judge needs frames of at least {MIN_SIZE} px, got {h} px")
    return h


def size_word(radius: float) -> str:
    """The size word whose circumradius is nearest (in ratio) to `radius` (canvas widths)."""
    return _SIZE_NAMES[int(np.searchsorted(_SIZE_EDGES, radius))]


def estimate_background(rgb: np.ndarray) -> np.ndarray:
    """Median colour of the outermost ring of pixels (objects cover little of it): RGB float."""
    ring = np.concatenate([rgb[0], rgb[-1], rgb[1:-1, 0], rgb[1:-1, -1]]).astype(np.float32)
    return np.median(ring, axis=0)


def background_word(rgb_colour: np.ndarray) -> str:
    """Nearest palette background to an RGB colour."""
    distances = np.linalg.norm(_BACKGROUND_RGB - np.asarray(rgb_colour, np.float32), axis=1)
    return _BACKGROUND_NAMES[int(np.argmin(distances))]


def coverage(
    shape: str, cx: float, cy: float, radius: float, size: int, window: tuple[int, int, int, int]
) -> np.ndarray:
    """Exact-in-the-limit anti-aliased coverage (h, w) in [0, 1] of a shape, in the pixel window
    (x0, y0, w, h) of a size x size canvas: the fraction of an 8x8 grid of sample points inside."""
    x0, y0, w, h = window
    n = _SAMPLES
    offsets = (np.arange(n) + 0.5) / n
    xs = ((x0 + np.arange(w))[:, None] + offsets).ravel() / size
    ys = ((y0 + np.arange(h))[:, None] + offsets).ravel() / size
    px, py = xs[None, :] - cx, ys[:, None] - cy
    if shape == "circle":
        inside = px * px + py * py <= radius * radius
    elif shape == "square":
        half = radius / math.sqrt(2.0)
        inside = (np.abs(px) <= half) & (np.abs(py) <= half)
    elif shape == "triangle":
        # Up-pointing equilateral: below the two slanted sides, above the base.
        slope = math.sqrt(3.0)
        inside = (py <= radius / 2.0) & (py >= -radius + slope * px) & (py >= -radius - slope * px)
    else:
        raise ValueError(f"unknown shape {shape!r}")
    return inside.reshape(h, n, w, n).mean(axis=(1, 3)).astype(np.float32)


def _unmix(rgb: np.ndarray, background: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Each pixel as background + alpha * (colour - background) for each palette colour.

    Returns alpha (h, w, K) in [0, 1], the squared residual (h, w, K) in RGB units, and the
    label (h, w) of the colour that explains the pixel best.
    """
    diff = rgb.astype(np.float32) - background
    direction = _PALETTE - background  # (K, 3)
    norm2 = np.maximum((direction**2).sum(axis=1), 1.0)
    dots = diff @ direction.T
    alpha = np.clip(dots / norm2, 0.0, 1.0)
    # |diff - alpha direction|^2, expanded so no (h, w, K, 3) array is made.
    residual = (diff**2).sum(axis=-1, keepdims=True) - alpha * (2.0 * dots - alpha * norm2)
    # A palette colour barely distinct from the background explains noise; never pick it.
    residual[..., norm2 < 40.0**2] = np.inf
    return alpha, residual, np.argmin(residual, axis=-1)


def _blobs(
    mask: np.ndarray, label: np.ndarray, residual: np.ndarray, min_pixels: int
) -> list[tuple[int, np.ndarray]]:
    """(colour index, pixel mask) per object: regions of `mask`, split where two colours meet."""
    count, regions, stats, _ = cv2.connectedComponentsWithStats(mask.astype(np.uint8), 8)
    out = []
    for r in range(1, count):
        if stats[r, cv2.CC_STAT_AREA] < min_pixels:
            continue
        x, y, w, h = (int(v) for v in stats[r, :4])
        box = (slice(y, y + h), slice(x, x + w))
        inside = regions[box] == r
        votes = np.bincount(label[box][inside], minlength=len(_COLOUR_NAMES))
        present = np.flatnonzero(votes >= min_pixels)
        if len(present) == 0:
            present = np.array([int(np.argmax(votes))])
        if len(present) == 1:
            full = np.zeros_like(mask)
            full[box] = inside
            out.append((int(present[0]), full))
            continue
        # Colours that meet inside one region: each pixel goes to the nearer of them.
        nearest = present[np.argmin(residual[box][..., present], axis=-1)]
        for k in present:
            part = (inside & (nearest == k)).astype(np.uint8)
            n, pieces, piece_stats, _ = cv2.connectedComponentsWithStats(part, 8)
            for p in range(1, n):
                if piece_stats[p, cv2.CC_STAT_AREA] >= min_pixels:
                    full = np.zeros_like(mask)
                    full[box] = pieces == p
                    out.append((int(k), full))
    return out


def _measure(
    k: int,
    blob: np.ndarray,
    rgb: np.ndarray,
    background: np.ndarray,
    alpha: np.ndarray,
    others: np.ndarray,
    size: int,
) -> Detection | None:
    """Colour, centre, area, shape and size of one blob (palette colour index k)."""
    ys, xs = np.nonzero(blob)
    m = _WINDOW_MARGIN
    x0, y0 = max(int(xs.min()) - m, 0), max(int(ys.min()) - m, 0)
    x1, y1 = min(int(xs.max()) + m + 1, size), min(int(ys.max()) + m + 1, size)
    box = (slice(y0, y1), slice(x0, x1))
    palette_alpha = alpha[box][..., k]
    # The object's own colour (a model's may drift off the palette) from its opaque core.
    peak = float(palette_alpha[blob[box]].max())
    core = blob[box] & (palette_alpha >= max(_CORE_ALPHA, peak - 0.1))
    own = np.median(rgb[box][core], axis=0) if core.sum() >= 2 else _PALETTE[k]
    direction = own - background
    if float((direction**2).sum()) < 40.0**2:
        own, direction = _PALETTE[k], _PALETTE[k] - background
    diff = rgb[box].astype(np.float32) - background
    a = np.clip(diff @ direction / float((direction**2).sum()), 0.0, 1.0)
    near = cv2.dilate(blob[box].astype(np.uint8), _NEAR).astype(bool) & ~others[box]
    a = a * near
    a[a < 0.02] = 0.0
    mass = float(a.sum())
    if mass <= 0.0:
        return None
    gy, gx = np.mgrid[y0:y1, x0:x1].astype(np.float32)
    cx = float((a * (gx + 0.5)).sum()) / mass / size
    cy = float((a * (gy + 0.5)).sum()) / mass / size
    area = mass / size**2
    window = (x0, y0, x1 - x0, y1 - y0)
    best = (math.inf, "", 0.0)
    for shape in SHAPES:
        radius = math.sqrt(area / AREA_FACTOR[shape])
        sharp = coverage(shape, cx, cy, radius, size, window)
        for sigma in _BLUR_LEVELS:
            template = cv2.GaussianBlur(sharp, (0, 0), sigma) if sigma > 0 else sharp
            error = float(np.abs(a - template * near).sum()) / mass
            best = min(best, (error, shape, radius))
    error, shape, radius = best
    colour = _COLOUR_NAMES[int(np.argmin(np.linalg.norm(_PALETTE - own, axis=1)))]
    opacity = float(np.percentile(palette_alpha[blob[box]], 90))
    return Detection(colour, shape, size_word(radius), radius, cx, cy, area, opacity, error)


# ------------------------------------------------------------------------------- public API


def detect_objects(
    rgb: np.ndarray,
    background: str | np.ndarray | tuple | None = None,
    min_alpha: float = MIN_ALPHA,
    min_opacity: float = MIN_OPACITY,
) -> list[Detection]:
    """Objects in a square uint8 RGB frame, largest first.

    `background`: a palette word or RGB colour; None measures it from the frame's border.
    `min_opacity`: blobs fainter than this are left out (0 keeps faint ghosts, for tween checks).
    """
    size = _check_frame(rgb)
    if background is None:
        bg = estimate_background(rgb)
    elif isinstance(background, str):
        bg = np.array(BACKGROUNDS[background], np.float32)
    else:
        bg = np.asarray(background, np.float32)
    alpha, residual, label = _unmix(rgb, bg)
    best_alpha = np.take_along_axis(alpha, label[..., None], axis=-1)[..., 0]
    mask = best_alpha >= min_alpha
    smallest = AREA_FACTOR["triangle"] * (min(SIZES.values()) * size) ** 2
    min_pixels = max(2, int(round(MIN_BLOB_SHARE * smallest)))
    blobs = _blobs(mask, label, residual, min_pixels)
    detections = []
    for colour, blob in blobs:
        found = _measure(colour, blob, rgb, bg, alpha, mask & ~blob, size)
        if found is not None and found.opacity >= min_opacity:
            detections.append(found)
    return sorted(detections, key=lambda d: d.area, reverse=True)


def as_description(description: Description | str) -> Description:
    """A still description, parsed from caption text if needed (UserError if not a still)."""
    if isinstance(description, str):
        parsed = parse_caption(description)
        if parsed is None or parsed.kind != "still":
            raise UserError(f"not a shapes-world still caption: {description!r}")
        return parsed
    if description.kind != "still":
        raise UserError(f"the judge needs a still description, got a {description.kind}")
    return description


def _agreement(expected: ObjectWords, d: Detection) -> int:
    return (
        (d.shape == expected.shape)
        + (d.size_word == expected.size)
        + (d.position == expected.position)
    )


def _match(
    expected: tuple[ObjectWords, ...], detections: list[Detection]
) -> list[Detection | None]:
    """Pair each expected object with a detection: its colour first, then the best agreement."""
    free = list(range(len(detections)))
    matched: list[int | None] = [None] * len(expected)
    for same_colour in (True, False):
        for i, want in enumerate(expected):
            if matched[i] is not None:
                continue
            options = [j for j in free if (detections[j].colour == want.colour) == same_colour]
            if options:
                # Detections are sorted largest first, so ties go to the larger one.
                j = max(options, key=lambda j: (_agreement(want, detections[j]), -j))
                matched[i] = j
                free.remove(j)
    return [None if j is None else detections[j] for j in matched]


def judge(rgb: np.ndarray, description: Description | str) -> Verdict:
    """Judge a frame against a still caption or description, attribute by attribute."""
    description = as_description(description)
    _check_frame(rgb)
    bg = estimate_background(rgb)
    detections = detect_objects(rgb, background=bg)
    objects = []
    for want, got in zip(description.objects, _match(description.objects, detections), strict=True):
        if got is None:
            objects.append(ObjectVerdict(want, None, False, False, False, False))
            continue
        objects.append(
            ObjectVerdict(
                want,
                got,
                colour=got.colour == want.colour,
                shape=got.shape == want.shape,
                size=got.size_word == want.size,
                position=got.position == want.position,
            )
        )
    return Verdict(
        background_expected=description.background,
        background_seen=background_word(bg),
        count_expected=len(description.objects),
        count_seen=len(detections),
        objects=tuple(objects),
        detections=tuple(detections),
    )
