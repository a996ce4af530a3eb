"""The frame plan: which frame shows which panel, and which gaps are tweened or cut.

Pure functions of the timing only (no models, no files). A plan partitions frames
``0 .. num_frames - 1`` into segments, in order:

- ``hold``: frames showing panel ``from_panel``'s image unchanged; every panel starts with one,
  whose first frame is the panel's key frame.
- ``tween``: in-betweens from ``from_panel`` (known at ``start_frame - 1``, the hold's last frame)
  to ``to_panel`` (known at ``end_frame``; when looping, the last tween ends at ``num_frames``,
  which is frame 0 again).
- ``cut``: motion that starts from ``from_panel``'s hold and has no target; it ends in a hard
  cut to ``to_panel`` (``None``: the end of the film). The animatic preview holds the image.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np

from pipeline.shotlist import ShotList


@dataclass(frozen=True)
class Segment:
    """Frames ``start_frame .. end_frame - 1`` of one kind; panels are 0-based indices."""

    start_frame: int
    end_frame: int
    kind: str  # "hold", "tween" or "cut"
    from_panel: int
    to_panel: int | None

    @property
    def num_frames(self) -> int:
        return self.end_frame - self.start_frame


@dataclass(frozen=True)
class FramePlan:
    """The whole film's timing: key frame of each panel and the segments covering every frame."""

    num_frames: int
    fps: float
    loop: bool
    keys: tuple[int, ...]
    segments: tuple[Segment, ...]


def make_plan(
    durations: Sequence[int],
    holds: Sequence[int],
    transitions: Sequence[str],
    loop: bool = False,
    fps: float = 24,
) -> FramePlan:
    """Plan from per-panel durations and holds (frames) and transitions ("tween" or "cut").

    A hold of 0 or 1 keeps just the key frame still; a hold may not exceed its duration.
    The last panel may tween only when looping (back to panel 0).
    """
    count = len(durations)
    if count == 0 or not count == len(holds) == len(transitions):
        raise ValueError("need one duration, hold and transition per panel, and at least one")
    if loop and count < 2:
        raise ValueError("a loop needs at least 2 panels")
    segments = []
    keys = []
    frame = 0
    for index, (duration, hold, transition) in enumerate(
        zip(durations, holds, transitions, strict=True)
    ):
        if duration < 1 or not 0 <= hold <= duration or transition not in ("tween", "cut"):
            raise ValueError(f"panel {index}: bad timing {duration=} {hold=} {transition=}")
        next_panel = index + 1 if index + 1 < count else (0 if loop else None)
        if transition == "tween" and next_panel is None:
            raise ValueError(f"panel {index}: the last panel can only tween when looping")
        keys.append(frame)
        still = max(hold, 1)
        segments.append(Segment(frame, frame + still, "hold", index, index))
        if still < duration:
            segments.append(Segment(frame + still, frame + duration, transition, index, next_panel))
        frame += duration
    return FramePlan(frame, fps, loop, tuple(keys), tuple(segments))


def plan_frames(shots: ShotList) -> FramePlan:
    """The frame plan of a parsed shot list."""
    panels = shots.panels
    return make_plan(
        [p.duration for p in panels],
        [p.hold for p in panels],
        [p.transition for p in panels],
        loop=shots.loop,
        fps=shots.fps,
    )


def key_frames(plan: FramePlan) -> list[int]:
    """Frame index of every panel's key, in panel order."""
    return list(plan.keys)


def tween_bounds(plan: FramePlan, segment: Segment) -> tuple[int, int]:
    """The known frames either side of a tween: its hold's last frame and the next key."""
    if segment.kind != "tween":
        raise ValueError(f"not a tween segment: {segment}")
    return segment.start_frame - 1, segment.end_frame % plan.num_frames


def animatic_frames(
    plan: FramePlan, panel_images: Sequence[np.ndarray], dissolve: bool = False
) -> Iterator[np.ndarray]:
    """The animatic preview, no model: each panel held for its duration, cuts are cuts.

    With ``dissolve``, tweens cross-fade linearly between their known frames instead. Yields
    read-only ``uint8 (h, w, 3)`` frames; held frames share one array.
    """
    if len(panel_images) != len(plan.keys):
        raise ValueError(f"{len(plan.keys)} panels but {len(panel_images)} images")
    images = [np.asarray(image) for image in panel_images]
    for image in images:
        if image.dtype != np.uint8 or image.ndim != 3 or image.shape != images[0].shape:
            raise ValueError(f"panel images must be uint8 (h, w, 3) of one size, got {image.shape}")
    frozen = []
    for image in images:
        view = image.view()
        view.flags.writeable = False
        frozen.append(view)
    for segment in plan.segments:
        if segment.kind == "tween" and dissolve:
            yield from _dissolve(images[segment.from_panel], images[segment.to_panel], segment)
        else:
            for _ in range(segment.num_frames):
                yield frozen[segment.from_panel]


def _dissolve(first: np.ndarray, last: np.ndarray, segment: Segment) -> Iterator[np.ndarray]:
    steps = segment.num_frames + 1  # the known frames sit at t = 0 and t = 1
    first, last = first.astype(np.float32), last.astype(np.float32)
    for n in range(1, steps):
        t = n / steps
        yield np.round(first * (1 - t) + last * t).astype(np.uint8)
