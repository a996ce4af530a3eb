"""The shapes world of shapes_world.md: palette, scenes, exact gravity-and-bounce physics, sampling.

Coordinates are normalised: x in [0, 1] left to right, y in [0, 1] top to bottom (so gravity is +y).
Physics is integrated in closed form between events (floor and wall contacts), so any frame time is
exact, not an accumulation of steps.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

FPS = 24.0
GRAVITY = 1.5  # canvas heights per second squared, pulling towards +y
FLOOR_RESTITUTION = 0.85
WALL_RESTITUTION = 1.0
MIN_COLOUR_DISTANCE = 80.0
REST_SPEED = 1e-6  # a bounce slower than this ends the (geometric) series of bounces: at rest

BACKGROUNDS: dict[str, tuple[int, int, int]] = {
    "navy": (20, 30, 80),
    "gray": (110, 110, 110),
    "beige": (225, 210, 170),
    "teal": (20, 110, 110),
    "maroon": (100, 20, 40),
    "forest": (25, 80, 35),
    "sky": (150, 200, 240),
    "pink": (240, 180, 200),
}
COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (230, 40, 40),
    "green": (60, 200, 70),
    "blue": (40, 90, 230),
    "yellow": (245, 215, 40),
    "purple": (150, 60, 210),
    "orange": (250, 140, 30),
    "white": (250, 250, 250),
    "black": (15, 15, 15),
}
SHAPES: tuple[str, ...] = ("circle", "square", "triangle")
SIZES: dict[str, float] = {"small": 0.07, "medium": 0.11, "large": 0.16}
# Row-major over the 3x3 grid: index = 3 * row + column.
POSITIONS: tuple[str, ...] = (
    "top left",
    "top",
    "top right",
    "left",
    "center",
    "right",
    "bottom left",
    "bottom",
    "bottom right",
)
DIRECTIONS: tuple[str, ...] = ("to the left", "to the right", "in place")
IN_PLACE_SPEED = 0.1

START_Y = (0.15, 0.75)
START_VX = (-0.6, 0.6)
START_VY = (-1.0, 0.5)
CELL_MARGIN = 0.04  # stills keep centres this far inside their cell, so the position word is clear


@dataclass(frozen=True)
class SceneObject:
    """One object: what it is, where its centre is, and (for clips) its start velocity."""

    shape: str
    colour: str
    size: str
    x: float
    y: float
    vx: float = 0.0
    vy: float = 0.0

    def __post_init__(self) -> None:
        for field, value, allowed in (
            ("shape", self.shape, SHAPES),
            ("colour", self.colour, COLOURS),
            ("size", self.size, SIZES),
        ):
            if value not in allowed:
                raise ValueError(f"unknown {field} {value!r}; expected one of {', '.join(allowed)}")

    @property
    def radius(self) -> float:
        """Radius of the circumscribed circle, in canvas widths."""
        return SIZES[self.size]


@dataclass(frozen=True)
class Scene:
    """A background and its objects, drawn in order (a later object covers an earlier one)."""

    background: str
    objects: tuple[SceneObject, ...]

    def __post_init__(self) -> None:
        if self.background not in BACKGROUNDS:
            raise ValueError(
                f"unknown background {self.background!r}; expected one of {', '.join(BACKGROUNDS)}"
            )


def colour_distance(a: tuple[int, int, int], b: tuple[int, int, int]) -> float:
    """Euclidean distance in RGB 0-255."""
    return math.dist(a, b)


def allowed_colours(background: str) -> tuple[str, ...]:
    """Object colours that stand out from a background (distance >= 80), the only ones generated."""
    bg = BACKGROUNDS[background]
    return tuple(c for c, rgb in COLOURS.items() if colour_distance(rgb, bg) >= MIN_COLOUR_DISTANCE)


def cell_index(x: float, y: float) -> int:
    """Index into POSITIONS of the 3x3 cell holding (x, y); off-canvas points use the edge cell."""
    col = min(max(int(math.floor(x * 3)), 0), 2)
    row = min(max(int(math.floor(y * 3)), 0), 2)
    return 3 * row + col


def position_word(x: float, y: float) -> str:
    return POSITIONS[cell_index(x, y)]


def direction_word(vx: float) -> str:
    """The clip caption's direction, from the sign of the start horizontal speed."""
    if abs(vx) < IN_PLACE_SPEED:
        return "in place"
    return "to the left" if vx < 0 else "to the right"


# ---------------------------------------------------------------- physics


def _fall_time(drop: float, vy: float) -> float:
    """Smallest t >= 0 with vy t + g t^2 / 2 = drop (drop >= 0), in a cancellation-free form."""
    if drop <= 0.0 and vy >= 0.0:
        return 0.0
    root = math.sqrt(vy * vy + 2.0 * GRAVITY * drop)
    return (root - vy) / GRAVITY if vy < 0.0 else 2.0 * drop / (vy + root)


def _vertical(y0: float, vy0: float, radius: float, times: np.ndarray) -> np.ndarray:
    """y and vy at sorted times: parabolic arcs joined by floor bounces (restitution 0.85)."""
    floor = 1.0 - radius
    out = np.empty((len(times), 2))
    t0, y, vy, resting = 0.0, y0, vy0, False
    i = 0
    while i < len(times):
        hit = math.inf if resting else t0 + _fall_time(floor - y, vy)
        while i < len(times) and times[i] <= hit:
            if resting:
                out[i] = (floor, 0.0)
            else:
                dt = times[i] - t0
                out[i] = (y + vy * dt + 0.5 * GRAVITY * dt * dt, vy + GRAVITY * dt)
            i += 1
        impact = math.sqrt(vy * vy + 2.0 * GRAVITY * max(floor - y, 0.0))
        t0, y, vy = hit, floor, -FLOOR_RESTITUTION * impact
        resting = -vy < REST_SPEED
    return out


def _horizontal(x0: float, vx0: float, radius: float, times: np.ndarray) -> np.ndarray:
    """x and vx at times: uniform motion folded between the walls (elastic, restitution 1)."""
    span = 1.0 - 2.0 * radius
    travelled = np.mod((x0 - radius) + vx0 * times, 2.0 * span)
    outbound = travelled <= span
    x = radius + np.where(outbound, travelled, 2.0 * span - travelled)
    return np.stack([x, np.where(outbound, vx0, -vx0) * WALL_RESTITUTION], axis=1)


def simulate(obj: SceneObject, times: np.ndarray | list[float]) -> np.ndarray:
    """State (x, y, vx, vy) of an object at the given times in seconds (sorted, >= 0): (n, 4)."""
    times = np.asarray(times, dtype=np.float64)
    if times.ndim != 1 or np.any(times < 0) or np.any(np.diff(times) < 0):
        raise ValueError("times must be a sorted 1-D sequence of non-negative seconds")
    r = obj.radius
    eps = 1e-9
    if not (r - eps <= obj.x <= 1.0 - r + eps) or obj.y + r > 1.0 + eps:
        raise ValueError(f"start position ({obj.x}, {obj.y}) puts the object inside a wall/floor")
    x = _horizontal(obj.x, obj.vx, r, times)
    y = _vertical(min(obj.y, 1.0 - r), obj.vy, r, times)
    return np.stack([x[:, 0], y[:, 0], x[:, 1], y[:, 1]], axis=1)


def frame_times(frames: int, fps: float = FPS) -> np.ndarray:
    """Frame k is shown at k / fps seconds; frame 0 is the start state."""
    return np.arange(frames, dtype=np.float64) / fps


def clip_centres(scene: Scene, frames: int, fps: float = FPS) -> np.ndarray:
    """Centres of every object in every frame: (frames, objects, 2) as (x, y)."""
    times = frame_times(frames, fps)
    if not scene.objects:
        return np.zeros((frames, 0, 2))
    return np.stack([simulate(o, times)[:, :2] for o in scene.objects], axis=1)


# ---------------------------------------------------------------- sampling


def _pick(rng: np.random.Generator, options) -> str:
    options = tuple(options)
    return options[int(rng.integers(len(options)))]


def _pick_colours(rng: np.random.Generator, background: str, count: int) -> list[str]:
    """Distinct colours, each far enough from the background."""
    allowed = list(allowed_colours(background))
    picks = rng.choice(len(allowed), size=count, replace=False)
    return [allowed[int(i)] for i in picks]


def random_clip_scene(rng: np.random.Generator, max_objects: int = 2) -> Scene:
    """A clip's start state per the spec: x uniform in [r, 1 - r], y, vx, vy uniform in ranges."""
    count = int(rng.integers(1, max_objects + 1))
    background = _pick(rng, BACKGROUNDS)
    objects = []
    for colour in _pick_colours(rng, background, count):
        shape, size = _pick(rng, SHAPES), _pick(rng, SIZES)
        r = SIZES[size]
        objects.append(
            SceneObject(
                shape=shape,
                colour=colour,
                size=size,
                x=float(rng.uniform(r, 1.0 - r)),
                y=float(rng.uniform(*START_Y)),
                vx=float(rng.uniform(*START_VX)),
                vy=float(rng.uniform(*START_VY)),
            )
        )
    return Scene(background, tuple(objects))


def _point_in_cell(rng: np.random.Generator, cell: int, radius: float) -> tuple[float, float]:
    """A centre inside a cell (away from its borders) that keeps the whole object on the canvas."""
    row, col = divmod(cell, 3)

    def axis(k: int) -> float:
        lo = max(k / 3 + CELL_MARGIN, radius)
        hi = min((k + 1) / 3 - CELL_MARGIN, 1.0 - radius)
        return float(rng.uniform(lo, hi))

    return axis(col), axis(row)


def random_still_scene(
    rng: np.random.Generator, cell: int | None = None, max_objects: int = 2
) -> Scene:
    """A still with 1-2 non-overlapping objects in distinct cells (the first in `cell` if given)."""
    count = int(rng.integers(1, max_objects + 1))
    background = _pick(rng, BACKGROUNDS)
    colours = _pick_colours(rng, background, count)
    first_cell = int(rng.integers(9)) if cell is None else cell
    objects: list[SceneObject] = []
    for k, colour in enumerate(colours):
        shape, size = _pick(rng, SHAPES), _pick(rng, SIZES)
        r = SIZES[size]
        for _ in range(100):
            c = first_cell if k == 0 else int(rng.integers(9))
            x, y = _point_in_cell(rng, c, r)
            if k == 0 or all(
                cell_index(o.x, o.y) != c and math.dist((x, y), (o.x, o.y)) >= r + o.radius
                for o in objects
            ):
                objects.append(SceneObject(shape, colour, size, x, y))
                break
    return Scene(background, tuple(objects))
