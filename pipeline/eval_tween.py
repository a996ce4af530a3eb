"""`animatic eval tween` on the shapes world: on fresh simulated clips, keep every gap-th frame as
a key and score the frames between against the simulator's ground truth: PSNR, SSIM,
object-centre error in pixels, ghosting. Also the tweens it scores: built-ins and trained models.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
from tqdm import tqdm

from pipeline import baselines
from pipeline.eval_common import check_images
from pipeline.judge import detect_objects
from pipeline.shapes import Scene, clip_centres, random_clip_scene, render_clip

CLIP_STREAM = 1002  # random stream of the eval clips (the dataset tool uses 0 for clips)
DEFAULT_GAPS = (2, 4, 8, 16)
# Looking for ghosts, a copy of an object counts down to 15% opacity: faint, but visible.
GHOST_ALPHA = 0.15
BUILTIN_TWEEN = ("oracle", "baseline-crossfade", "baseline-flow", "flow-paths")

Tween = Callable[[np.ndarray, list[int], int], np.ndarray]


# ----------------------------------------------------------------------------- clips


@dataclass(frozen=True)
class Clip:
    """A simulated clip: its scene, rendered frames (f, h, w, 3) and true centres (f, n, 2)."""

    scene: Scene
    frames: np.ndarray
    centres: np.ndarray


def tween_clips(count: int = 32, size: int = 64, frames: int = 33, seed: int = 0) -> list[Clip]:
    """Fresh shapes-world clips with the simulator's centres (their own random stream)."""
    clips = []
    for i in range(count):
        scene = random_clip_scene(np.random.default_rng([seed, CLIP_STREAM, i]))
        centres = clip_centres(scene, frames)
        clips.append(Clip(scene, render_clip(scene, size, frames, centres=centres), centres))
    return clips


def key_positions(num_frames: int, gap: int) -> list[int]:
    """Every gap-th frame, plus the last frame (the keys of one eval run)."""
    positions = list(range(0, num_frames, gap))
    if positions[-1] != num_frames - 1:
        positions.append(num_frames - 1)
    return positions


def trackable(clip: Clip) -> np.ndarray:
    """(f, n) bool: the object is wholly on the canvas and clear of every other object, so its
    true centre is what a perfect frame shows (objects may fly above the top and cross)."""
    size = clip.frames.shape[1]
    radii = np.array([o.radius for o in clip.scene.objects])
    c = clip.centres
    pad = 0.5 / size
    ok = (c - radii[None, :, None] >= -pad).all(-1) & (c + radii[None, :, None] <= 1 + pad).all(-1)
    for i in range(len(radii)):
        for j in range(len(radii)):
            if i != j:
                apart = np.linalg.norm(c[:, i] - c[:, j], axis=-1) >= radii[i] + radii[j] + 1 / size
                ok[:, i] &= apart
    return ok


# ----------------------------------------------------------------------------- scores


class _ImageScores:
    """Running mean PSNR and SSIM (keyframe.frame_metrics') of frame pairs, scored in chunks:
    a few large tensor calls cost far less than many small ones."""

    CHUNK = 64

    def __init__(self) -> None:
        self.pending: list[tuple[np.ndarray, np.ndarray]] = []
        self.frames = 0
        self.psnr = 0.0
        self.ssim = 0.0

    def add(self, got: np.ndarray, truth: np.ndarray) -> None:
        self.pending.append((got, truth))
        if sum(len(g) for g, _ in self.pending) >= self.CHUNK:
            self.flush()

    def flush(self) -> None:
        if not self.pending:
            return
        from keyframe.frame_metrics import psnr, ssim
        from keyframe.pixels import from_uint8

        got = from_uint8(np.concatenate([g for g, _ in self.pending]))
        truth = from_uint8(np.concatenate([t for _, t in self.pending]))
        self.pending = []
        self.psnr += float(psnr(got, truth)) * len(got)
        self.ssim += float(ssim(got, truth)) * len(got)
        self.frames += len(got)

    def means(self) -> tuple[float | None, float | None]:
        self.flush()
        if not self.frames:
            return None, None
        return self.psnr / self.frames, self.ssim / self.frames


@dataclass
class _Tracking:
    """Running counts of the object checks over in-between frames."""

    frames: int = 0  # frames with at least one tracked object
    ghosted: int = 0
    objects: int = 0  # tracked (object, frame) pairs
    missing: int = 0
    split: int = 0
    located: int = 0
    error_px: float = 0.0

    def check(self, frame: np.ndarray, clip: Clip, f: int, tracked: np.ndarray) -> None:
        """Find each tracked object of frame f by its colour; count ghosts and centre errors."""
        size = frame.shape[0]
        detections = detect_objects(frame, min_alpha=GHOST_ALPHA, min_opacity=0.0)
        ghosted = False
        for i, obj in enumerate(clip.scene.objects):
            if not tracked[i]:
                continue
            blobs = [d for d in detections if d.colour == obj.colour]
            self.objects += 1
            self.missing += not blobs
            self.split += len(blobs) > 1
            ghosted |= len(blobs) != 1
            if blobs:  # largest first: the object's best guess
                true_x, true_y = clip.centres[f, i]
                self.error_px += math.hypot(blobs[0].cx - true_x, blobs[0].cy - true_y) * size
                self.located += 1
        self.frames += 1
        self.ghosted += ghosted


def _ratio(a: float, b: int) -> float | None:
    return a / b if b else None


def _score_clip(
    tween: Tween, clip: Clip, gap: int, scores: _ImageScores, tracking: _Tracking
) -> None:
    """Tween one clip from keys every `gap` frames and add its in-betweens to the scores."""
    num_frames = len(clip.frames)
    positions = key_positions(num_frames, gap)
    out = tween(clip.frames[positions].copy(), positions, num_frames)
    check_images(out, num_frames, "the tween model")
    if out.shape != clip.frames.shape:
        raise ValueError(f"the tween model returned {out.shape}, expected {clip.frames.shape}")
    between = sorted(set(range(num_frames)) - set(positions))
    if not between:
        return
    scores.add(out[between], clip.frames[between])
    tracked = trackable(clip)
    for f in between:
        if tracked[f].any():
            tracking.check(out[f], clip, f, tracked[f])


def eval_tween(
    tween: Tween,
    clips: Sequence[Clip],
    gaps: Sequence[int] = DEFAULT_GAPS,
    progress: str | None = None,
) -> dict[int, dict]:
    """Per gap: PSNR (dB, capped at 100), SSIM, trajectory error (px, mean over tracked objects
    in in-between frames; a split object counts its largest blob), ghosting (share of
    in-between frames where a tracked object is missing or split into several blobs of its
    colour, copies down to GHOST_ALPHA opacity included), and the missing and split shares of
    tracked objects. Tracked: wholly on the canvas and clear of other objects (`trackable`).
    `progress`: a name to show progress bars under (None: quiet)."""
    table = {}
    for gap in gaps:
        scores, tracking = _ImageScores(), _Tracking()
        label = f"{progress} gap {gap}"
        for clip in tqdm(clips, desc=label, unit="clip", disable=progress is None, leave=False):
            _score_clip(tween, clip, gap, scores, tracking)
        psnr, ssim = scores.means()
        table[gap] = {
            "psnr": psnr,
            "ssim": ssim,
            "trajectory_px": _ratio(tracking.error_px, tracking.located),
            "ghosting": _ratio(tracking.ghosted, tracking.frames),
            "missing": _ratio(tracking.missing, tracking.objects),
            "split": _ratio(tracking.split, tracking.objects),
            "frames": scores.frames,
            "tracked_frames": tracking.frames,
        }
    return table


# ----------------------------------------------------------------------------- tweens to score


def builtin_tween(name: str, clips: Sequence[Clip]) -> Tween:
    """A built-in tween: "oracle" (the clips' own frames) or one of the baselines."""
    if name == "oracle":
        return baselines.oracle_tween([c.frames for c in clips])
    if name == "baseline-crossfade":
        return baselines.crossfade
    if name == "baseline-flow":
        return baselines.flow_warp
    if name == "flow-paths":
        return baselines.flow_paths
    raise ValueError(f"no built-in tween {name!r}; expected one of {', '.join(BUILTIN_TWEEN)}")


def model_tween(
    model,
    steps: int | None = None,
    seed: int = 0,
    init: str | None = None,
    init_sigma: float | None = None,
    motion: bool = True,
) -> Tween:
    """A trained interpolation model (an InterpolatePipeline) as a tween (keys at the model's
    own size); init, init_sigma and motion as in interpolate.inbetween.interpolate (None: the
    model's defaults)."""
    import torch

    from interpolate.inbetween import interpolate
    from pipeline.io import from_uint8_rgb, to_uint8_rgb

    def tween(keys: np.ndarray, positions: list[int], num_frames: int) -> np.ndarray:
        k = torch.stack([torch.from_numpy(from_uint8_rgb(key)) for key in keys])
        video = interpolate(
            model, k, positions, num_frames, steps=steps, seed=seed, init=init,
            init_sigma=init_sigma, motion=motion,
        )  # fmt: skip
        return np.stack([to_uint8_rgb(video[:, f]) for f in range(num_frames)])

    return tween
