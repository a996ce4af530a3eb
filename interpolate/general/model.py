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
import torch.nn.functional as F
from einops import rearrange, repeat
from torch import nn

from interpolate.general.motion import COND_CHANNELS, MOTION_CHANNELS
from interpolate.temporal import TemporalLayer
from keyframe.diffusion import Denoiser
from keyframe.layers import group_norm, zero_module
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


def neighbours(h: torch.Tensor, num_frames: int) -> torch.Tensor:
    """(b f) c h w -> (b f) 3c h w: each frame beside the one before and after it (zeros at the
    ends), so a 1x1 convolution over the result is a temporal convolution of kernel 3."""
    x = rearrange(h, "(b f) c h w -> b f c h w", f=num_frames)
    before = F.pad(x[:, :-1], (0, 0, 0, 0, 0, 0, 1, 0))
    after = F.pad(x[:, 1:], (0, 0, 0, 0, 0, 0, 0, 1))
    return rearrange(torch.cat([before, x, after], 2), "b f c h w -> (b f) c h w")


class FrameMix(nn.Module):
    """Residual temporal convolution (kernel 3 in time), as interpolate.temporal.TemporalConv
    computes it, but as 1x1 convolutions over neighbouring frames in the spatial layers' own
    `(b f) c h w` layout: on a CPU, Conv1d over `(b h w)` sequences of a few frames was a third
    of the network's time. The last convolution starts at zero."""

    def __init__(self, channels: int):
        super().__init__()
        self.norm1 = group_norm(channels)
        self.conv1 = nn.Conv2d(3 * channels, channels, 1)
        self.norm2 = group_norm(channels)
        self.conv2 = zero_module(nn.Conv2d(3 * channels, channels, 1))

    def forward(self, h: torch.Tensor, num_frames: int) -> torch.Tensor:
        y = self.conv1(neighbours(F.silu(self.norm1(h)), num_frames))
        return h + self.conv2(neighbours(F.silu(self.norm2(y)), num_frames))


class MotionUNet(nn.Module):
    """`net(x, c_noise, cond)`: x (b, 5, f, h, w) scaled noisy motion, cond (b, 17, f, h, w)."""

    def __init__(self, config: MotionConfig):
        super().__init__()
        self.config = config

        def temporal(channels: int) -> nn.Module:
            if not config.temporal_attention:
                return FrameMix(channels)
            return TemporalLayer(
                channels, True, config.num_heads, config.max_relative_distance
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
