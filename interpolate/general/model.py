"""The general interpolator's network: a video U-Net over motion fields, and its config.

Input per frame: the noisy motion residual (interpolate.general.motion: 5 channels) beside the
conditioning channels (17: both keys, both keys warped by the flow init, the init flows, t); the
spatial U-Net (keyframe.unet) runs on `(b f) c h w` and temporal layers (interpolate.temporal)
let the frames of a gap agree on one motion. No text, no latent space: motion is smooth, so a
small network at a low working resolution can afford it on a CPU.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import torch
from einops import rearrange, repeat
from torch import nn

from interpolate.general.motion import COND_CHANNELS, MOTION_CHANNELS
from interpolate.temporal import TemporalLayer
from keyframe.diffusion import Denoiser
from keyframe.unet import UNet


@dataclass
class MotionConfig:
    """Everything that builds the network and its sampling defaults (saved as config.json).

    `working_size`: the longer side (px) motion is made at; keys larger than it are shrunk for
    the network (frames are still made at the keys' size). `patch`: the U-Net runs on
    patch x patch blocks of pixels folded into channels (space-to-depth): fewer, wider feature
    maps, which a CPU convolves several times faster per FLOP than narrow full-size ones.
    `window`: in-between frames per network run. Sampling: `steps` of DPM-Solver++(2M) from
    `sigma_start`.
    """

    patch: int = 2
    model_channels: int = 24
    channel_mult: list[int] = field(default_factory=lambda: [1, 2, 2])
    num_res_blocks: int = 1
    attention_levels: list[int] = field(default_factory=lambda: [2])
    num_heads: int = 4
    temporal_attention: bool = False
    max_relative_distance: int = 16
    sigma_data: float = 0.5
    working_size: int = 256
    window: int = 16
    steps: int = 4
    sigma_start: float = 2.0

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict) -> MotionConfig:
        known = set(cls.__dataclass_fields__)
        return cls(**{k: v for k, v in values.items() if k in known})

    @property
    def multiple(self) -> int:
        """Working sizes must be multiples of this (the U-Net halves the size per level)."""
        return self.patch * 2 ** (len(self.channel_mult) - 1)


class MotionUNet(nn.Module):
    """`net(x, c_noise, cond)`: x (b, 5, f, h, w) scaled noisy motion, cond (b, 17, f, h, w)."""

    def __init__(self, config: MotionConfig):
        super().__init__()
        self.config = config

        def temporal(channels: int) -> TemporalLayer:
            return TemporalLayer(
                channels, config.temporal_attention, config.num_heads,
                config.max_relative_distance,
            )  # fmt: skip

        folded = config.patch**2
        self.unet = UNet(
            (MOTION_CHANNELS + COND_CHANNELS) * folded,
            MOTION_CHANNELS * folded,
            config.model_channels,
            config.channel_mult,
            config.num_res_blocks,
            config.attention_levels,
            config.num_heads,
            temporal_layer=temporal,
        )

    def forward(self, x: torch.Tensor, c_noise: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        b, _, f = x.shape[:3]
        p = self.config.patch
        inp = rearrange(
            torch.cat([x, cond.to(x.dtype)], 1),
            "b c f (h p1) (w p2) -> (b f) (c p1 p2) h w", p1=p, p2=p,
        )  # fmt: skip
        c_noise = torch.as_tensor(c_noise, device=x.device).reshape(-1).expand(b)
        out = self.unet(inp, repeat(c_noise, "b -> (b f)", f=f), None, None, None, f, None)
        return rearrange(out, "(b f) (c p1 p2) h w -> b c f (h p1) (w p2)", f=f, p1=p, p2=p)


def build_denoiser(config: MotionConfig) -> Denoiser:
    """The EDM denoiser D(x, sigma, cond=...) around a fresh network."""
    return Denoiser(MotionUNet(config), config.sigma_data)
