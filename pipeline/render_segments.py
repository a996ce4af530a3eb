"""The frames of a film, segment by segment: holds repeat their panel, tweens and cuts ask the
tween model (pipeline.render_models) for a window of frames, with an optional on-disk cache.

Pure frames in, frames out: a tween's window holds up to ``context`` frames already made before
its first key (never across a cut), that key, its in-betweens and the next key; a cut's window
is the same without a next key. Each model segment is keyed by a content hash of its inputs, so
a render that stops resumes from the finished segments (pipeline.render).
"""

from __future__ import annotations

import hashlib
import json
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from pipeline import io
from pipeline.render_models import TweenFn, accepted_keywords
from pipeline.storyboard_models import model_id
from pipeline.timeline import FramePlan, Segment

DEFAULT_CONTEXT = 2


@dataclass(frozen=True)
class SegmentJob:
    """One model call: known frames (context, then the keys) at positions in a window; the
    segment's frames are ``window[take_start : take_start + segment.num_frames]``."""

    index: int
    segment: Segment
    keys: np.ndarray
    positions: tuple[int, ...]
    num_frames: int
    take_start: int
    seed: int
    prompt: str | None
    key: str = field(default="", compare=False)


def segment_hash(job: SegmentJob, model: str, fps: float, kwargs: set[str]) -> str:
    """Content hash of everything that decides a segment's frames."""
    digest = hashlib.sha256()
    meta = {
        "kind": job.segment.kind,
        "positions": list(job.positions),
        "num_frames": job.num_frames,
        "take": [job.take_start, job.segment.num_frames],
        "seed": job.seed,
        "model": model,
        "prompt": job.prompt if "prompt" in kwargs else None,
        "fps": fps if "fps" in kwargs else None,
        "shape": list(job.keys.shape),
    }
    digest.update(json.dumps(meta, sort_keys=True).encode())
    digest.update(np.ascontiguousarray(job.keys).tobytes())
    return digest.hexdigest()


class SegmentCache:
    """Finished segments as ``folder/segment_NNN-<hash>.npz`` (lossless), found by hash."""

    def __init__(self, folder: Path):
        self.folder = folder

    def _name(self, index: int, key: str) -> Path:
        return self.folder / f"segment_{index:03d}-{key[:16]}.npz"

    def get(self, key: str, shape: tuple[int, ...]) -> np.ndarray | None:
        for path in sorted(self.folder.glob(f"segment_*-{key[:16]}.npz")):
            try:
                with np.load(path) as data:
                    if str(data["key"]) == key and data["frames"].shape == shape:
                        return data["frames"]
            except (OSError, ValueError, KeyError):
                continue  # a damaged part is redone
        return None

    def put(self, index: int, key: str, frames: np.ndarray) -> None:
        with io.atomic_path(self._name(index, key)) as tmp, open(tmp, "wb") as handle:
            np.savez_compressed(handle, frames=frames, key=np.array(key))


def shot_starts(plan: FramePlan) -> list[int]:
    """For each frame, the first frame of its shot (a shot ends at every cut)."""
    starts, start, previous = [], 0, None
    for segment in plan.segments:
        if segment.kind == "hold" and previous in (None, "cut"):
            start = segment.start_frame
        starts.extend([start] * segment.num_frames)
        previous = segment.kind
    return starts


def film_frames(
    plan: FramePlan,
    images: Sequence[np.ndarray],
    tween: TweenFn,
    seeds: Sequence[int],
    prompts: Sequence[str | None] | None = None,
    context: int = DEFAULT_CONTEXT,
    cache: SegmentCache | None = None,
    on_segment: Callable[[SegmentJob, bool], None] | None = None,
) -> Iterator[np.ndarray]:
    """Every frame of the film in order, uint8 (h, w, 3); keys are the panel images exactly.

    A tween's window holds up to ``context`` frames already made before its first key (never
    across a cut), that key, its in-betweens and the next key; a cut's window is the same
    without a next key. ``seeds``/``prompts`` are per panel (a segment takes its first
    panel's). ``on_segment(job, reused)`` follows each model segment.
    """
    if len(images) != len(plan.keys) or len(seeds) != len(plan.keys):
        raise ValueError(f"{len(plan.keys)} panels, {len(images)} images, {len(seeds)} seeds")
    prompts = list(prompts) if prompts is not None else [None] * len(images)
    kwargs = accepted_keywords(tween, ("prompt", "fps"))
    model = model_id(tween)
    starts = shot_starts(plan)
    recent: deque[np.ndarray] = deque(maxlen=max(context, 0) + 1)
    for index, segment in enumerate(plan.segments):
        if segment.kind == "hold":
            frames = [images[segment.from_panel]] * segment.num_frames
        else:
            job = _job(index, segment, images, seeds, prompts, recent, starts, context)
            job = replace(job, key=segment_hash(job, model, plan.fps, kwargs))
            shape = (segment.num_frames, *images[0].shape)
            frames = cache.get(job.key, shape) if cache is not None else None
            reused = frames is not None
            if frames is None:
                frames = _run_tween(tween, job, kwargs, plan.fps)
                if cache is not None:
                    cache.put(index, job.key, frames)
            if on_segment is not None:
                on_segment(job, reused)
        for image in frames:
            recent.append(image)
            yield image


def _job(index, segment, images, seeds, prompts, recent, starts, context) -> SegmentJob:
    first = segment.start_frame - 1  # the hold's last frame: the first key of the window
    lead = min(max(context, 0), first - starts[first], len(recent) - 1)
    known = [recent[-2 - i] for i in reversed(range(lead))]
    known.append(images[segment.from_panel])
    n = segment.num_frames
    if segment.kind == "tween":
        known.append(images[segment.to_panel])
        positions = (*range(lead + 1), lead + n + 1)
        total = lead + n + 2
    else:
        positions = tuple(range(lead + 1))
        total = lead + 1 + n
    return SegmentJob(
        index=index,
        segment=segment,
        keys=np.stack(known),
        positions=positions,
        num_frames=total,
        take_start=lead + 1,
        seed=int(seeds[segment.from_panel]),
        prompt=prompts[segment.from_panel],
    )


def _run_tween(tween: TweenFn, job: SegmentJob, kwargs: set[str], fps: float) -> np.ndarray:
    extra = {"prompt": job.prompt, "fps": fps}
    frames = tween(
        job.keys,
        list(job.positions),
        job.num_frames,
        job.seed,
        **{k: v for k, v in extra.items() if k in kwargs},
    )
    frames = np.asarray(frames)
    expected = (job.num_frames, *job.keys.shape[1:])
    if frames.dtype != np.uint8 or frames.shape != expected:
        raise ValueError(
            f"tween model {model_id(tween)}: expected uint8 {expected}, "
            f"got {frames.dtype} {frames.shape}"
        )
    part = frames[job.take_start : job.take_start + job.segment.num_frames]
    return np.ascontiguousarray(part)
