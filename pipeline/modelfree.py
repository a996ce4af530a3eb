"""Model-free in-betweens at the keys' own depth and channels: ``flow`` and ``crossfade``.

Frames follow pipeline.media's contract (float32 (h, w, C), premultiplied). ``flow`` is the
flow in-betweening that `render --tween-model flow` previews with (interpolate.paths.PathFrames:
paths through the keys, trust-weighted splatting, holes inpainted): 8-bit RGB keys get exactly
those frames (up to WORK_SIDE px); other keys (alpha, 16-bit, EXR, larger) find their motion on
8-bit stand-ins at most WORK_SIDE px across (`flow_proxies`), as DESIGN.md's resolution
independence asks, and every channel, alpha included, is carried along that motion at the
keys' own size, in float.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import cv2
import numpy as np

from interpolate.flow import key_span, warp
from interpolate.paths import PathFrames
from interpolate.splatting import HOLE_RADIUS, splat
from pipeline import media

WORK_SIDE = 512  # motion is found on stand-ins at most this many px across, then carried at size


def inbetweens(
    keys: np.ndarray, positions: Sequence[int], num_frames: int, kind: str, depth: str
) -> Iterator[np.ndarray]:
    """Every frame 0 .. num_frames - 1 (float32, keys at their positions exactly) of ``keys``
    (k, h, w, C) float32 at frame numbers ``positions``; frames past the last key repeat it."""
    positions = [int(p) for p in positions]
    if kind == "crossfade":
        yield from (_crossfade(keys, positions, f) for f in range(num_frames))
        return
    if kind != "flow":
        raise ValueError(f"unknown model-free in-betweening {kind!r}; expected flow or crossfade")
    if depth == "8-bit" and keys.shape[-1] == 3 and max(keys.shape[1:3]) <= WORK_SIDE:
        frames = PathFrames(media.quantize(keys, "8-bit"), positions)
        yield from (media.from_rgb8(frames(f)) for f in range(num_frames))
        return
    proxies = flow_proxies(keys, depth)
    scale = min(1.0, WORK_SIDE / max(keys.shape[1:3]))
    if scale < 1.0:
        size = (max(1, round(keys.shape[2] * scale)), max(1, round(keys.shape[1] * scale)))
        proxies = np.stack([cv2.resize(p, size, interpolation=cv2.INTER_AREA) for p in proxies])
    paths = PathFrames(proxies, positions)
    for f in range(num_frames):
        yield _splatted(keys, paths, positions, f)


def flow_proxies(keys: np.ndarray, depth: str) -> np.ndarray:
    """8-bit RGB stand-ins (k, h, w, 3) of the keys to find motion on: float values scaled by
    the keys' 99th percentile with a 1/2.2 gamma (linear light spread as on screen); alpha
    composited onto one background opposite the keys' mean colour, so objects stand out."""
    colour = keys[..., :3]
    if depth in ("half", "float"):
        scale = max(float(np.percentile(colour, 99)), 1e-6)
        colour = np.clip(colour / scale, 0.0, 1.0) ** (1 / 2.2)
    if keys.shape[-1] == 4:
        alpha = keys[..., 3:]
        mean = colour.reshape(-1, 3).sum(0) / max(float(alpha.sum()), 1e-6)
        colour = colour + (1.0 - alpha) * (1.0 - np.clip(mean, 0.0, 1.0))
    return np.ascontiguousarray(media.quantize(colour, "8-bit"))


def _crossfade(keys: np.ndarray, positions: list[int], frame: int) -> np.ndarray:
    i, t = key_span(positions, frame)
    if t == 0.0:
        return keys[i]
    return (1.0 - t) * keys[i] + t * keys[i + 1]


def _splatted(keys: np.ndarray, paths: PathFrames, positions: list[int], frame: int) -> np.ndarray:
    """PathFrames.__call__ for C float channels: both keys pushed along their paths to the frame,
    blended by their splat weights; holes inpainted channel by channel."""
    i, t = key_span(positions, frame)
    if t == 0.0:
        return keys[i]
    h, w, c = keys.shape[1:]
    acc, total = np.zeros((h, w, c)), np.zeros((h, w))
    for k, near, share in ((i, i + 1, 1.0 - t), (i + 1, i, t)):
        shift = _at_size(paths.shift(k, near, frame - positions[k]), h, w, vector=True)
        weight = _at_size(paths.path(k, near)[2], h, w)
        splat(keys[k].astype(np.float64), shift, share * weight, acc, total)
    reached = total > 0
    if not reached.any():
        return _backward(keys, paths, i, t)
    out = (acc / np.where(reached, total, 1.0)[..., None]).astype(np.float32)
    if reached.all():
        return out
    holes = (~reached).astype(np.uint8)
    planes = [cv2.inpaint(out[..., n], holes, HOLE_RADIUS, cv2.INPAINT_TELEA) for n in range(c)]
    return np.stack(planes, axis=-1)


def _backward(keys: np.ndarray, paths: PathFrames, i: int, t: float) -> np.ndarray:
    """interpolate.flow.FlowFrames in float: both keys backward-warped to t and blended."""
    h, w = keys.shape[1:3]
    f01 = _at_size(paths.flow(i, i + 1), h, w, vector=True)
    f10 = _at_size(paths.flow(i + 1, i), h, w, vector=True)
    to0 = (-(1.0 - t) * t * f01 + t * t * f10).astype(np.float32)
    to1 = ((1.0 - t) ** 2 * f01 - t * (1.0 - t) * f10).astype(np.float32)
    mix = (1.0 - t) * warp(keys[i], to0) + t * warp(keys[i + 1], to1)
    return mix.reshape(keys.shape[1:]).astype(np.float32)


def _at_size(field: np.ndarray, height: int, width: int, vector: bool = False) -> np.ndarray:
    """A per-pixel field found on the stand-ins, at the keys' size (bilinear); motion vectors
    are scaled by the same factor."""
    if field.shape[:2] == (height, width):
        return field
    scale = width / field.shape[1]
    out = cv2.resize(field.astype(np.float32), (width, height), interpolation=cv2.INTER_LINEAR)
    return out.astype(np.float64) * (scale if vector else 1.0)
