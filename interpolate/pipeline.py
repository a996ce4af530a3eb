"""`InterpolatePipeline`: keys at frame numbers in, every frame out, from an InterpolateModel.

    pipe = InterpolatePipeline.from_pretrained("shapes")
    video = pipe(keys, positions=[0, 8], num_frames=9)      # c f h w in [-1, 1], keys exact
    for frame in pipe.frames(keys, [0, 8], 9): ...          # streamed, memory flat in length

The steps (windows planned, keys encoded, each window sampled and decoded, frames streamed) are
interpolate.inbetween's. `motion_prior` is a plug-in the shapes model hands over (its folder's
`motion/`): the flow init moves pixels along its paths; other models have none.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import torch

from interpolate.inbetween import interpolate, interpolate_frames
from interpolate.model import InterpolateModel
from interpolate.motion import MotionPrior
from keyframe.pipeline import StagePipeline


class InterpolatePipeline(StagePipeline):
    """An InterpolateModel and its plug-ins; see the module docstring. Loading, saving (with
    `motion/`), config and sampling defaults: keyframe.pipeline.StagePipeline."""

    KIND = "interpolate"

    def __init__(self, model: InterpolateModel, motion_prior: MotionPrior | None = None):
        self.model = model
        self.motion_prior = motion_prior

    def frames(self, keys, positions, num_frames: int, **options: Any) -> Iterator[torch.Tensor]:
        """Stream the frames (c, h, w); options: interpolate.inbetween.interpolate's."""
        return interpolate_frames(self, keys, positions, num_frames, **options)

    def __call__(self, keys, positions, num_frames: int, **options: Any) -> torch.Tensor:
        """The sequence `c f h w` in [-1, 1] (CPU) with the keys exactly in place."""
        return interpolate(self, keys, positions, num_frames, **options)
