"""Reference "models" for the evals: in-betweening baselines and ground-truth oracles.

Tweens take keys (k, h, w, 3) uint8, their frame numbers and the clip length, and return every
frame (num_frames, h, w, 3) uint8 with the keys kept exactly; frames before the first key or after
the last repeat it. Keyframe generators take captions and per-image seeds and return (n, h, w, 3).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import numpy as np

from interpolate.flow import FlowFrames, key_span
from interpolate.paths import PathFrames
from keyframe.errors import UserError
from pipeline.shapes import SIZES, Scene, SceneObject, parse_caption, render_still
from pipeline.shapes.world import CELL_MARGIN, POSITIONS

Tween = Callable[[np.ndarray, list[int], int], np.ndarray]
Generate = Callable[[list[str], list[int]], np.ndarray]


def _check_keys(keys: np.ndarray, positions: Sequence[int], num_frames: int) -> list[int]:
    positions = [int(p) for p in positions]
    if not (isinstance(keys, np.ndarray) and keys.dtype == np.uint8 and keys.ndim == 4):
        raise ValueError(f"keys must be uint8 (k, h, w, 3), got {getattr(keys, 'shape', keys)}")
    if len(positions) != len(keys) or not positions:
        raise ValueError(f"{len(keys)} keys but {len(positions)} positions")
    if any(b <= a for a, b in zip(positions, positions[1:], strict=False)):
        raise ValueError(f"key positions must increase: {positions}")
    if positions[0] < 0 or positions[-1] >= num_frames:
        raise ValueError(f"key positions {positions} fall outside 0..{num_frames - 1}")
    return positions


def _spans(positions: list[int], num_frames: int):
    """(frame, left key index, t in [0, 1]) for every frame; outside the keys t pins to a key."""
    for f in range(num_frames):
        yield f, *key_span(positions, f)


def crossfade(keys: np.ndarray, positions: Sequence[int], num_frames: int) -> np.ndarray:
    """Linear cross-fade between neighbouring keys: moving objects ghost (the lower bound)."""
    positions = _check_keys(keys, positions, num_frames)
    out = np.empty((num_frames, *keys.shape[1:]), np.uint8)
    for f, i, t in _spans(positions, num_frames):
        if t == 0.0:
            out[f] = keys[i]
        else:
            mix = (1.0 - t) * keys[i].astype(np.float32) + t * keys[i + 1].astype(np.float32)
            out[f] = np.clip(np.round(mix), 0, 255).astype(np.uint8)
    return out


def flow_warp(keys: np.ndarray, positions: Sequence[int], num_frames: int) -> np.ndarray:
    """Optical-flow in-betweening (interpolate.flow.FlowFrames): DIS flow both ways between
    neighbouring keys, each key warped to time t, blended with weights 1 - t and t."""
    positions = _check_keys(keys, positions, num_frames)
    frames = FlowFrames(keys, positions)
    return np.stack([frames(f) for f in range(num_frames)])


def motion_paths(prior=None) -> Tween:
    """Flow in-betweening along motion paths (interpolate.paths.PathFrames): a learned motion
    prior's paths, or parabolas through the keys without one. These are the frames the
    interpolator's flow init starts from, scored alone to show what the model adds."""

    def tween(keys: np.ndarray, positions: Sequence[int], num_frames: int) -> np.ndarray:
        positions = _check_keys(keys, positions, num_frames)
        frames = PathFrames(keys, positions, motion=prior)
        return np.stack([frames(f) for f in range(num_frames)])

    return tween


flow_paths = motion_paths()  # the init of a model without a prior (eval name "flow-paths")


def oracle_tween(clips: Sequence[np.ndarray]) -> Tween:
    """The ground truth as a tween: it finds the clip whose frames match the keys exactly."""

    def tween(keys: np.ndarray, positions: Sequence[int], num_frames: int) -> np.ndarray:
        positions = _check_keys(keys, positions, num_frames)
        for frames in clips:
            if len(frames) == num_frames and np.array_equal(frames[positions], keys):
                return frames.copy()
        raise ValueError("the oracle knows no clip with these keys")

    return tween


# ------------------------------------------------------------------------------ keyframes


def _centre_in_cell(rng: np.random.Generator, position: str, radius: float) -> tuple[float, float]:
    """A centre inside a position's grid cell, CELL_MARGIN from its borders, object on canvas."""
    row, col = divmod(POSITIONS.index(position), 3)

    def axis(k: int) -> float:
        lo = max(k / 3 + CELL_MARGIN, radius)
        hi = min((k + 1) / 3 - CELL_MARGIN, 1.0 - radius)
        return float(rng.uniform(lo, hi))

    return axis(col), axis(row)


def scene_for_caption(caption: str, rng: np.random.Generator) -> Scene:
    """A scene that a still caption describes (random centres in the named cells, objects kept
    apart when they can be); UserError for text outside the still grammar."""
    description = parse_caption(caption)
    if description is None or description.kind != "still":
        raise UserError(f"not a shapes-world still caption: {caption!r}")
    objects: list[SceneObject] = []
    for words in description.objects:
        radius = SIZES[words.size]
        for _ in range(100):
            x, y = _centre_in_cell(rng, words.position, radius)
            if all(math.dist((x, y), (o.x, o.y)) >= radius + o.radius for o in objects):
                break
        objects.append(SceneObject(words.shape, words.colour, words.size, x, y))
    return Scene(description.background, tuple(objects))


def oracle_keyframe(size: int = 64) -> Generate:
    """The renderer as a keyframe model: each caption drawn exactly, placed by its seed."""

    def generate(prompts: list[str], seeds: list[int]) -> np.ndarray:
        return np.stack(
            [
                render_still(scene_for_caption(p, np.random.default_rng(s)), size)
                for p, s in zip(prompts, seeds, strict=True)
            ]
        )

    return generate
