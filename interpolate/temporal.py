"""The keyframe U-Net inflated into time: temporal layers and the frame-conditioned video network.

Spatial layers see `(b f) c h w`; the temporal layers here regroup the same features as
`(b h w) c f` (convolution) and `(b h w) f c` (attention) with einops. Every temporal branch ends
in a zero-initialised projection, so a fresh video network treats frames independently and a
trained keyframe U-Net loads into it unchanged (Make-A-Video, Video LDM, AnimateDiff).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from einops import rearrange, repeat
from torch import nn

from keyframe.layers import Attention, FeedForward, group_norm, timestep_embedding, zero_module
from keyframe.unet import UNet


class TemporalConv(nn.Module):
    """Residual temporal convolution (kernel 3 in time, zero padded), as Video LDM's temporal
    ResBlock: norm, SiLU, conv, norm, SiLU, conv; the last conv starts at zero. The norms work per
    frame (as the spatial layers' do), so a frame only sees the frames within the convs' reach."""

    def __init__(self, channels: int, dropout: float = 0.0):
        super().__init__()
        self.norm1 = group_norm(channels)
        self.conv1 = nn.Conv1d(channels, channels, 3, padding=1)
        self.norm2 = group_norm(channels)
        self.dropout = nn.Dropout(dropout)
        self.conv2 = zero_module(nn.Conv1d(channels, channels, 3, padding=1))

    @staticmethod
    def _in_time(conv: nn.Conv1d, h: torch.Tensor, num_frames: int) -> torch.Tensor:
        """Apply a temporal conv to `(b f) c h w` features through `(b h w) c f`."""
        height, width = h.shape[-2:]
        x = rearrange(h, "(b f) c h w -> (b h w) c f", f=num_frames)
        return rearrange(conv(x), "(b h w) c f -> (b f) c h w", h=height, w=width)

    def forward(self, h: torch.Tensor, num_frames: int) -> torch.Tensor:
        y = self._in_time(self.conv1, F.silu(self.norm1(h)), num_frames)
        y = self.dropout(F.silu(self.norm2(y)))
        return h + self._in_time(self.conv2, y, num_frames)


def relative_positions(num_frames: int, max_distance: int, device=None) -> torch.Tensor:
    """(f, f) long table of clipped offsets j - i, shifted to 0..2 * max_distance (bias rows)."""
    idx = torch.arange(num_frames, device=device)
    offsets = (idx[None, :] - idx[:, None]).clamp(-max_distance, max_distance)
    return offsets + max_distance


class TemporalAttention(nn.Module):
    """Self-attention across frames at every pixel, with a learned relative position bias per
    head and offset (clipped at `max_distance`, as T5), then a feed-forward; zero output proj."""

    def __init__(self, channels: int, num_heads: int = 4, max_distance: int = 16):
        super().__init__()
        num_heads = max(1, min(num_heads, channels))
        while channels % num_heads:
            num_heads -= 1
        self.num_heads, self.max_distance = num_heads, max_distance
        self.norm = group_norm(channels)
        self.proj_in = nn.Linear(channels, channels)
        self.norm1 = nn.LayerNorm(channels)
        self.attn = Attention(channels, num_heads, channels // num_heads)
        self.norm2 = nn.LayerNorm(channels)
        self.ff = FeedForward(channels)
        self.proj_out = zero_module(nn.Linear(channels, channels))
        self.position_bias = nn.Parameter(torch.zeros(num_heads, 2 * max_distance + 1))

    def bias(self, num_frames: int) -> torch.Tensor:
        """(1, heads, f, f) additive attention bias for `num_frames` frames."""
        table = relative_positions(num_frames, self.max_distance, self.position_bias.device)
        return self.position_bias[:, table][None]

    def forward(self, h: torch.Tensor, num_frames: int) -> torch.Tensor:
        height, width = h.shape[-2:]
        # contiguous: on a strided view, proj_in runs one small matmul per pixel row on CPU
        x = rearrange(self.norm(h), "(b f) c h w -> (b h w) f c", f=num_frames).contiguous()
        x = self.proj_in(x)
        x = x + self.attn(self.norm1(x), bias=self.bias(num_frames).to(x.dtype))
        x = x + self.ff(self.norm2(x))
        x = rearrange(self.proj_out(x), "(b h w) f c -> (b f) c h w", h=height, w=width)
        return h + x


class TemporalLayer(nn.Module):
    """What the U-Net runs after each spatial block: temporal conv, then (optionally) attention."""

    def __init__(
        self,
        channels: int,
        attention: bool = True,
        num_heads: int = 4,
        max_distance: int = 16,
        dropout: float = 0.0,
    ):
        super().__init__()
        self.conv = TemporalConv(channels, dropout)
        self.attn = TemporalAttention(channels, num_heads, max_distance) if attention else None

    def forward(self, h: torch.Tensor, num_frames: int) -> torch.Tensor:
        h = self.conv(h, num_frames)
        return h if self.attn is None else self.attn(h, num_frames)


class VideoUNet(nn.Module):
    """Frame-conditioned video denoiser network, called by the Denoiser as `net(x, c_noise, ...)`.

    Input channels are concat(noisy latents, known latents (0 where unknown), mask), so the inner
    U-Net has 2 * latent_channels + 1 input channels. Text tokens (cross-attention) are shared by a
    video's frames; the frame rate enters through the U-Net's `extra_emb` (sinusoidal features of
    fps, then an MLP whose last layer starts at zero).
    """

    def __init__(
        self,
        latent_channels: int,
        model_channels: int = 64,
        channel_mult: Sequence[int] = (1, 2, 4),
        num_res_blocks: int = 2,
        attention_levels: Sequence[int] = (1, 2),
        num_heads: int = 4,
        head_dim: int | None = None,
        context_dim: int | None = None,
        pooled_dim: int | None = None,
        dropout: float = 0.0,
        checkpoint: bool = False,
        temporal_attention: bool = True,
        temporal_heads: int = 4,
        max_relative_distance: int = 16,
        fps_conditioning: bool = False,
        position_bands: int = 0,
    ):
        super().__init__()
        self.latent_channels = latent_channels

        def temporal(channels: int) -> TemporalLayer:
            return TemporalLayer(
                channels, temporal_attention, temporal_heads, max_relative_distance, dropout
            )

        self.unet = UNet(
            2 * latent_channels + 1,
            latent_channels,
            model_channels,
            channel_mult,
            num_res_blocks,
            attention_levels,
            num_heads,
            head_dim,
            context_dim,
            pooled_dim,
            dropout,
            checkpoint,
            temporal_layer=temporal,
            position_bands=position_bands,
        )
        emb_dim = self.unet.emb_dim
        self.fps_embed = (
            nn.Sequential(
                nn.Linear(model_channels, emb_dim),
                nn.SiLU(),
                zero_module(nn.Linear(emb_dim, emb_dim)),
            )
            if fps_conditioning
            else None
        )

    def forward(
        self,
        x: torch.Tensor,
        c_noise: torch.Tensor,
        known: torch.Tensor,
        mask: torch.Tensor,
        context: torch.Tensor | None = None,
        context_mask: torch.Tensor | None = None,
        pooled: torch.Tensor | None = None,
        fps: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """x, known: (b, c, f, h, w); mask: (b, 1, f, 1, 1) or (b, 1, f, h, w), 1 = known;
        c_noise: (b,) or scalar; context: (b, n, d); pooled: (b, d); fps: (b,).
        Returns (b, c, f, h, w)."""
        b, _, f, h, w = x.shape
        mask = mask.to(x.dtype).expand(b, 1, f, h, w)
        inp = rearrange(torch.cat([x, known.to(x.dtype), mask], 1), "b c f h w -> (b f) c h w")
        c_noise = torch.as_tensor(c_noise, device=x.device).reshape(-1).expand(b)
        c_noise = repeat(c_noise, "b -> (b f)", f=f)
        if context is not None:
            context = repeat(context, "b n d -> (b f) n d", f=f)
            if context_mask is not None:
                context_mask = repeat(context_mask, "b n -> (b f) n", f=f)
        if pooled is not None:
            pooled = repeat(pooled, "b d -> (b f) d", f=f)
        extra = None
        if self.fps_embed is not None and fps is not None:
            fps = torch.as_tensor(fps, device=x.device).reshape(-1).expand(b)
            features = timestep_embedding(fps.float(), self.unet.model_channels)
            extra = self.fps_embed(features.to(inp.dtype))
        out = self.unet(inp, c_noise, context, context_mask, pooled, f, extra)
        return rearrange(out, "(b f) c h w -> b c f h w", f=f)
