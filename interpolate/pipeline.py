"""`InterpolatePipeline`: keys at frame numbers in, every frame out, from an InterpolateModel.

    pipe = InterpolatePipeline.from_pretrained("shapes")
    video = pipe(keys, positions=[0, 8], num_frames=9)      # c f h w in [-1, 1], keys exact
    for frame in pipe.frames(keys, [0, 8], 9): ...          # streamed, memory flat in length

The steps (windows planned, keys encoded, each window sampled and decoded, frames streamed) are
interpolate.inbetween's. `motion_prior` is a plug-in the shapes model hands over (its folder's
`motion/`): the flow init moves pixels along its paths; other models have none.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import torch

from interpolate.inbetween import interpolate, interpolate_frames
from interpolate.model import InterpolateConfig, InterpolateModel
from interpolate.motion import MotionPrior
from keyframe import hub
from keyframe.sampling_options import sampling_defaults


class InterpolatePipeline:
    """An InterpolateModel and its plug-ins; see the module docstring."""

    def __init__(self, model: InterpolateModel, motion_prior: MotionPrior | None = None):
        self.model = model
        self.motion_prior = motion_prior

    @classmethod
    def from_pretrained(
        cls, name_or_path: str | os.PathLike, device: str | torch.device = "cpu"
    ) -> InterpolatePipeline:
        """A shipped name (interpolate/weights/), a folder from `save_pretrained`, or a .ckpt."""
        return hub.from_pretrained(name_or_path, "interpolate", device)

    def save_pretrained(self, folder: str | os.PathLike, **options: Any):
        """config.json + model.safetensors (+ motion/; options: module.save_interpolate's)."""
        return hub.save_pretrained(self, folder, **options)

    @property
    def config(self) -> InterpolateConfig:
        return self.model.config

    @property
    def device(self) -> torch.device:
        return self.model.device

    def to(self, device: str | torch.device) -> InterpolatePipeline:
        self.model.to(device)
        return self

    def sampling_defaults(self) -> dict[str, Any]:
        """The model's own steps, guidance and sampler (its config's sample_*)."""
        return sampling_defaults(self.config)

    def frames(self, keys, positions, num_frames: int, **options: Any) -> Iterator[torch.Tensor]:
        """Stream the frames (c, h, w); options: interpolate.inbetween.interpolate's."""
        return interpolate_frames(self, keys, positions, num_frames, **options)

    def __call__(self, keys, positions, num_frames: int, **options: Any) -> torch.Tensor:
        """The sequence `c f h w` in [-1, 1] (CPU) with the keys exactly in place."""
        return interpolate(self, keys, positions, num_frames, **options)
