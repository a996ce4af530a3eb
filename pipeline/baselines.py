"""Reference "models" for the evals: in-betweening baselines and ground-truth oracles.

Tweens take keys (k, h, w, 3) uint8, their frame numbers and the clip length, and return every
frame (num_frames, h, w, 3) uint8 with the keys kept exactly; frames before the first key or after
the last repeat it. Keyframe generators take captions and per-image seeds and return (n, h, w, 3).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import cv2
import numpy as np

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
        i = int(np.searchsorted(positions, f, side="right")) - 1
        if i < 0:
            yield f, 0, 0.0
        elif i >= len(positions) - 1:
            yield f, len(positions) - 1, 0.0
        else:
            yield f, i, (f - positions[i]) / (positions[i + 1] - positions[i])


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


def _flow_channel(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Both frames as one 8-bit channel along their main colour axis (PCA of their pixels).

    Plain luma can make a coloured object vanish against a background of the same brightness;
    the principal colour axis keeps the strongest contrast the two frames have.
    """
    pixels = np.concatenate([a.reshape(-1, 3), b.reshape(-1, 3)]).astype(np.float32)
    mean = pixels.mean(axis=0)
    _, vectors = np.linalg.eigh(np.cov((pixels - mean).T) + 1e-6 * np.eye(3))
    axis = vectors[:, -1]
    projected = (pixels - mean) @ axis
    low, high = float(projected.min()), float(projected.max())
    scale = 255.0 / max(high - low, 1e-6)
    gray = np.clip((projected - low) * scale, 0, 255).astype(np.uint8)
    n = a.shape[0] * a.shape[1]
    return gray[:n].reshape(a.shape[:2]), gray[n:].reshape(b.shape[:2])


def _warp(image: np.ndarray, flow: np.ndarray) -> np.ndarray:
    """Backward warp: out(x) = image(x + flow(x)), bilinear, edges replicated."""
    h, w = flow.shape[:2]
    gx, gy = np.meshgrid(np.arange(w, dtype=np.float32), np.arange(h, dtype=np.float32))
    return cv2.remap(
        image, gx + flow[..., 0], gy + flow[..., 1], cv2.INTER_LINEAR, None, cv2.BORDER_REPLICATE
    )


def _dis_flows(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """DIS flow a -> b and b -> a, (h, w, 2) in pixels.

    The frames are padded by their own size on every side (edges replicated): DIS builds its
    pyramid from the image size, and the extra levels let it follow motions as large as objects
    travel between distant keys; the padding is cropped off again.
    """
    g0, g1 = _flow_channel(a, b)
    pad = max(a.shape[:2])

    def padded(g: np.ndarray) -> np.ndarray:
        return cv2.copyMakeBorder(g, pad, pad, pad, pad, cv2.BORDER_REPLICATE)

    dis = cv2.DISOpticalFlow_create(cv2.DISOPTICAL_FLOW_PRESET_MEDIUM)
    crop = (slice(pad, -pad), slice(pad, -pad))
    forward = dis.calc(padded(g0), padded(g1), None)[crop]
    backward = dis.calc(padded(g1), padded(g0), None)[crop]
    return forward, backward


def flow_warp(keys: np.ndarray, positions: Sequence[int], num_frames: int) -> np.ndarray:
    """Optical-flow in-betweening: DIS flow (Kroeger et al. 2016) both ways between neighbouring
    keys, the flow from time t approximated as in Super SloMo (Jiang et al. 2018, eq. 4):
    F_t0 = -(1 - t) t F_01 + t^2 F_10 and F_t1 = (1 - t)^2 F_01 - t (1 - t) F_10; each key is
    warped to time t and the two are blended with weights 1 - t and t."""
    positions = _check_keys(keys, positions, num_frames)
    out = np.empty((num_frames, *keys.shape[1:]), np.uint8)
    flows: dict[int, tuple[np.ndarray, np.ndarray]] = {}
    for f, i, t in _spans(positions, num_frames):
        if t == 0.0:
            out[f] = keys[i]
            continue
        if i not in flows:
            flows[i] = _dis_flows(keys[i], keys[i + 1])
        f01, f10 = flows[i]
        to0 = -(1.0 - t) * t * f01 + t * t * f10
        to1 = (1.0 - t) ** 2 * f01 - t * (1.0 - t) * f10
        k0, k1 = keys[i].astype(np.float32), keys[i + 1].astype(np.float32)
        mix = (1.0 - t) * _warp(k0, to0) + t * _warp(k1, to1)
        out[f] = np.clip(np.round(mix), 0, 255).astype(np.uint8)
    return out


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
