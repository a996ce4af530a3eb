"""Building blocks shared by the U-Net, the frame autoencoder and (through them) the video model."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn


def zero_module(module: nn.Module) -> nn.Module:
    """Zero a module's parameters, so a residual branch starts as the identity (ADM, ControlNet)."""
    for p in module.parameters():
        nn.init.zeros_(p)
    return module


def group_norm(channels: int, max_groups: int = 32, eps: float = 1e-6) -> nn.Module:
    """GroupNorm with the largest group count <= max_groups that divides `channels`; no
    normalisation when max_groups is 0 (it erases the absolute colour of flat images)."""
    if max_groups == 0:
        return nn.Identity()
    return nn.GroupNorm(math.gcd(channels, max_groups), channels, eps=eps)


def timestep_embedding(t: torch.Tensor, dim: int, max_period: float = 10000.0) -> torch.Tensor:
    """Sinusoidal features of a (b,) float tensor, as in ADM and EDM's DhariwalUNet: (b, dim)."""
    half = dim // 2
    freqs = torch.exp(
        -math.log(max_period) * torch.arange(half, dtype=torch.float32, device=t.device) / half
    )
    args = t.float()[:, None] * freqs[None]
    emb = torch.cat([torch.cos(args), torch.sin(args)], dim=-1)
    return F.pad(emb, (0, dim % 2))


class ResBlock(nn.Module):
    """GroupNorm-SiLU-conv residual block; with `emb_dim`, the embedding scales and shifts the
    second norm (ADM's use_scale_shift_norm). The last conv starts at zero."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        emb_dim: int | None = None,
        dropout: float = 0.0,
        norm_groups: int = 32,
    ):
        super().__init__()
        self.norm1 = group_norm(in_channels, norm_groups)
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, padding=1)
        self.emb_proj = nn.Linear(emb_dim, 2 * out_channels) if emb_dim else None
        self.norm2 = group_norm(out_channels, norm_groups)
        self.dropout = nn.Dropout(dropout)
        self.conv2 = zero_module(nn.Conv2d(out_channels, out_channels, 3, padding=1))
        self.skip = (
            nn.Identity()
            if in_channels == out_channels
            else nn.Conv2d(in_channels, out_channels, 1)
        )

    def forward(self, x: torch.Tensor, emb: torch.Tensor | None = None) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        h = self.norm2(h)
        if self.emb_proj is not None:
            scale, shift = self.emb_proj(F.silu(emb))[:, :, None, None].chunk(2, dim=1)
            h = h * (1 + scale) + shift
        h = self.conv2(self.dropout(F.silu(h)))
        return self.skip(x) + h


class Attention(nn.Module):
    """Multi-head attention on token sequences (b, n, c) through SDPA.

    `context` (b, m, context_dim) makes it cross-attention; `mask` (b, m) bool marks the context
    tokens that count (a row with none gives zeros); `bias` is an additive float bias broadcastable
    to (b, heads, n, m), e.g. a relative position bias for temporal attention. `anchors`, set only
    by `keyframe.consistency.anchored_attention`, adds an anchor sample's keys and values.
    """

    def __init__(
        self,
        dim: int,
        num_heads: int,
        head_dim: int,
        context_dim: int | None = None,
    ):
        super().__init__()
        inner = num_heads * head_dim
        self.num_heads = num_heads
        self.to_q = nn.Linear(dim, inner, bias=False)
        self.to_k = nn.Linear(context_dim or dim, inner, bias=False)
        self.to_v = nn.Linear(context_dim or dim, inner, bias=False)
        self.to_out = nn.Linear(inner, dim)
        self.anchors: tuple[int, ...] | None = None

    def forward(
        self,
        x: torch.Tensor,
        context: torch.Tensor | None = None,
        mask: torch.Tensor | None = None,
        bias: torch.Tensor | None = None,
    ) -> torch.Tensor:
        context = x if context is None else context
        q, k, v = (
            rearrange(t, "b n (h d) -> b h n d", h=self.num_heads)
            for t in (self.to_q(x), self.to_k(context), self.to_v(context))
        )
        attn_mask = bias
        if self.anchors is not None:
            if mask is not None or bias is not None:
                raise ValueError("anchored attention takes no mask or bias")
            k, v, attn_mask = anchor_keys_values(k, v, self.anchors)
        has_any = None
        if mask is not None:
            mask = mask.bool()
            has_any = mask.any(dim=-1)
            # Rows without any valid token attend to everything; their output is zeroed below.
            mask = mask | ~has_any[:, None]
            keep = torch.zeros(mask.shape, dtype=q.dtype, device=q.device)
            keep = keep.masked_fill(~mask, float("-inf"))[:, None, None, :]
            attn_mask = keep if attn_mask is None else attn_mask + keep
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask)
        out = self.to_out(rearrange(out, "b h n d -> b n (h d)"))
        if has_any is not None:
            out = out * has_any[:, None, None].to(out.dtype)
        return out


def anchor_keys_values(
    k: torch.Tensor, v: torch.Tensor, anchors: tuple[int, ...]
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Keys and values (b, h, n, d) of each sample joined with those of its anchor: the batch is
    groups of len(anchors) samples (e.g. the uncond and cond halves of guidance), and sample i of
    a group also attends to sample anchors[i] of the same group. An anchor's copy of its own
    tokens is masked out, so an anchor attends to itself alone (Text2Video-Zero's cross-frame
    attention, StoryDiffusion's consistent self-attention, without training)."""
    batch, group = k.shape[0], len(anchors)
    if batch % group:
        raise ValueError(f"a batch of {batch} is not groups of {group} samples")
    own = torch.arange(batch, device=k.device)
    index = own // group * group + torch.tensor(anchors, device=k.device).repeat(batch // group)
    mask = torch.zeros(batch, 1, 1, 2 * k.shape[2], dtype=k.dtype, device=k.device)
    mask[index == own, :, :, k.shape[2] :] = float("-inf")
    return torch.cat([k, k[index]], dim=2), torch.cat([v, v[index]], dim=2), mask


class FeedForward(nn.Module):
    """GEGLU feed-forward (Shazeer 2020), as in Stable Diffusion's transformer blocks."""

    def __init__(self, dim: int, mult: int = 4, dropout: float = 0.0):
        super().__init__()
        inner = dim * mult
        self.proj_in = nn.Linear(dim, 2 * inner)
        self.dropout = nn.Dropout(dropout)
        self.proj_out = nn.Linear(inner, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, gate = self.proj_in(x).chunk(2, dim=-1)
        return self.proj_out(self.dropout(h * F.gelu(gate)))


def position_features(height: int, width: int, bands: int, device=None) -> torch.Tensor:
    """Fourier features (height * width, 4 * bands) of each pixel's centre in [-1, 1]^2, row-major:
    the same layout at any resolution, so a model trained at one size samples at another."""
    ys = (torch.arange(height, device=device) + 0.5) / height * 2 - 1
    xs = (torch.arange(width, device=device) + 0.5) / width * 2 - 1
    grid = torch.stack(torch.meshgrid(ys, xs, indexing="ij"), dim=-1).reshape(-1, 2)
    freqs = math.pi * 2.0 ** torch.arange(bands, device=device)
    angles = rearrange(grid[:, :, None] * freqs, "n a f -> n (a f)")
    return torch.cat([angles.sin(), angles.cos()], dim=-1)


class SpatialTransformer(nn.Module):
    """Self-attention, optional cross-attention to context tokens, and a feed-forward over the
    pixels of a feature map (Stable Diffusion's transformer block, linear projections, depth 1).
    The output projection starts at zero, so the block starts as the identity.
    `position_bands` > 0 adds a learned projection (zero at start) of each pixel's Fourier
    position features to the tokens, so attention queries know where they are ("at the top left"
    needs that; convolutions only see it through padding)."""

    def __init__(
        self,
        channels: int,
        num_heads: int,
        head_dim: int,
        context_dim: int | None = None,
        dropout: float = 0.0,
        position_bands: int = 0,
    ):
        super().__init__()
        self.norm = group_norm(channels)
        self.proj_in = nn.Linear(channels, channels)
        self.position_bands = position_bands
        self.position = (
            zero_module(nn.Linear(4 * position_bands, channels)) if position_bands else None
        )
        self.norm1 = nn.LayerNorm(channels)
        self.self_attn = Attention(channels, num_heads, head_dim)
        self.norm2 = nn.LayerNorm(channels) if context_dim else None
        self.cross_attn = (
            Attention(channels, num_heads, head_dim, context_dim) if context_dim else None
        )
        self.norm3 = nn.LayerNorm(channels)
        self.ff = FeedForward(channels, dropout=dropout)
        self.proj_out = zero_module(nn.Linear(channels, channels))

    def forward(
        self,
        x: torch.Tensor,
        context: torch.Tensor | None = None,
        context_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        h_size, w_size = x.shape[-2:]
        h = rearrange(self.norm(x), "b c h w -> b (h w) c")
        h = self.proj_in(h)
        if self.position is not None:
            features = position_features(h_size, w_size, self.position_bands, h.device)
            h = h + self.position(features.to(h.dtype))
        h = h + self.self_attn(self.norm1(h))
        if self.cross_attn is not None and context is not None:
            h = h + self.cross_attn(self.norm2(h), context, context_mask)
        h = h + self.ff(self.norm3(h))
        h = rearrange(self.proj_out(h), "b (h w) c -> b c h w", h=h_size, w=w_size)
        return x + h


class SelfAttention2d(nn.Module):
    """Plain residual self-attention over the pixels of a feature map (the autoencoder's middle)."""

    def __init__(self, channels: int, num_heads: int = 1, norm_groups: int = 32):
        super().__init__()
        self.norm = group_norm(channels, norm_groups)
        self.attn = Attention(channels, num_heads, channels // num_heads)
        zero_module(self.attn.to_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h_size, w_size = x.shape[-2:]
        h = self.attn(rearrange(self.norm(x), "b c h w -> b (h w) c"))
        return x + rearrange(h, "b (h w) c -> b c h w", h=h_size, w=w_size)


class Downsample(nn.Module):
    """Halve the resolution with a strided 3x3 conv."""

    def __init__(self, in_channels: int, out_channels: int | None = None):
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels or in_channels, 3, stride=2, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


class Upsample(nn.Module):
    """Double the resolution: nearest-neighbour upsampling then a 3x3 conv."""

    def __init__(self, in_channels: int, out_channels: int | None = None):
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels or in_channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))
