"""The 2D U-Net (ADM / Stable Diffusion layout) that both stages share.

Called by the diffusion core as `net(x, c_noise, **cond)`. Stage 2 turns it into a video U-Net by
passing `temporal_layer`, a factory `channels -> module` whose modules run as `layer(h, num_frames)`
on `(b f) c h w` features after every ResBlock and attention block. The temporal modules live in
their own attributes, so every spatial parameter keeps the name it has in the plain 2D model and a
keyframe checkpoint loads into the inflated model with `strict=False` (only temporal keys missing).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from einops import repeat
from torch import nn
from torch.utils.checkpoint import checkpoint as checkpoint_fn

from keyframe.layers import (
    Downsample,
    ResBlock,
    SpatialTransformer,
    Upsample,
    group_norm,
    timestep_embedding,
    zero_module,
)

TemporalFactory = Callable[[int], nn.Module]
BlockFactory = Callable[[int, int, bool], "UNetBlock"]  # block(in, out, attention)


class UNetBlock(nn.Module):
    """One ResBlock, an optional attention block, and (for video) a temporal layer after each."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        emb_dim: int,
        attention: bool,
        num_heads: int,
        head_dim: int,
        context_dim: int | None,
        dropout: float,
        temporal_layer: TemporalFactory | None,
        position_bands: int = 0,
    ):
        super().__init__()
        self.res = ResBlock(in_channels, out_channels, emb_dim, dropout)
        self.attn = (
            SpatialTransformer(
                out_channels, num_heads, head_dim, context_dim, dropout, position_bands
            )
            if attention
            else None
        )
        self.res_temporal = temporal_layer(out_channels) if temporal_layer else None
        self.attn_temporal = temporal_layer(out_channels) if temporal_layer and attention else None

    def forward(
        self,
        h: torch.Tensor,
        emb: torch.Tensor,
        context: torch.Tensor | None,
        context_mask: torch.Tensor | None,
        num_frames: int,
    ) -> torch.Tensor:
        h = self.res(h, emb)
        if self.res_temporal is not None:
            h = self.res_temporal(h, num_frames)
        if self.attn is not None:
            h = self.attn(h, context, context_mask)
            if self.attn_temporal is not None:
                h = self.attn_temporal(h, num_frames)
        return h


def _block_factory(
    emb_dim: int,
    num_heads: int,
    head_dim: int | None,
    context_dim: int | None,
    dropout: float,
    temporal_layer: TemporalFactory | None,
    position_bands: int,
) -> BlockFactory:
    """block(in_channels, out_channels, attention) -> a UNetBlock with these settings; heads are
    `head_dim` wide if given, else `num_heads` of them."""

    def heads(channels: int) -> tuple[int, int]:
        if head_dim is not None:
            return max(channels // head_dim, 1), head_dim
        return num_heads, max(channels // num_heads, 1)

    def block(cin: int, cout: int, attention: bool) -> UNetBlock:
        n, d = heads(cout)
        return UNetBlock(
            cin, cout, emb_dim, attention, n, d, context_dim, dropout, temporal_layer,
            position_bands,
        )  # fmt: skip

    return block


class UNet(nn.Module):
    """Noise-conditioned U-Net with optional text cross-attention and optional temporal layers.

    Levels run at resolutions 1, 1/2, 1/4, ... with `model_channels * channel_mult[i]` channels;
    `attention_levels` lists the levels with self- and cross-attention (the middle block has
    attention when the deepest level does). Heads: `head_dim` if given, else `num_heads`.
    `position_bands` > 0 gives attention blocks Fourier position features (see SpatialTransformer).
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
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
        temporal_layer: TemporalFactory | None = None,
        position_bands: int = 0,
    ):
        super().__init__()
        channel_mult = list(channel_mult)
        attention_levels = set(attention_levels)
        bad = sorted(level for level in attention_levels if not 0 <= level < len(channel_mult))
        if bad:
            raise ValueError(f"attention_levels {bad} outside 0..{len(channel_mult) - 1}")
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.model_channels = model_channels
        self.num_levels = len(channel_mult)
        self.checkpoint = checkpoint
        self.emb_dim = emb_dim = 4 * model_channels
        block = _block_factory(
            emb_dim, num_heads, head_dim, context_dim, dropout, temporal_layer, position_bands
        )

        # Modules are made in forward order (their parameters draw the RNG in this order).
        self.time_embed = nn.Sequential(
            nn.Linear(model_channels, emb_dim), nn.SiLU(), nn.Linear(emb_dim, emb_dim)
        )
        self.pooled_embed = nn.Linear(pooled_dim, emb_dim) if pooled_dim else None
        self.conv_in = nn.Conv2d(in_channels, model_channels, 3, padding=1)
        self.down_blocks, self.downsamplers, skip_channels = self._encoder(
            block, channel_mult, num_res_blocks, attention_levels
        )
        ch = skip_channels[-1]  # the deepest level's channels
        deepest_attention = (self.num_levels - 1) in attention_levels
        self.mid_blocks = nn.ModuleList([block(ch, ch, deepest_attention), block(ch, ch, False)])
        self.up_blocks, self.upsamplers, ch = self._decoder(
            block, ch, skip_channels, channel_mult, num_res_blocks, attention_levels
        )
        self.norm_out = group_norm(ch)
        self.conv_out = zero_module(nn.Conv2d(ch, out_channels, 3, padding=1))

    def _encoder(
        self,
        block: BlockFactory,
        channel_mult: Sequence[int],
        num_res_blocks: int,
        attention_levels: set[int],
    ) -> tuple[nn.ModuleList, nn.ModuleList, list[int]]:
        """The down path: per level, its blocks and (but the last) a downsampler; and the
        channels of every feature map the decoder will concatenate, the input conv's first."""
        ch = self.model_channels
        skip_channels = [ch]
        down_blocks, downsamplers = nn.ModuleList(), nn.ModuleList()
        for level, mult in enumerate(channel_mult):
            blocks = nn.ModuleList()
            for _ in range(num_res_blocks):
                blocks.append(block(ch, self.model_channels * mult, level in attention_levels))
                ch = self.model_channels * mult
                skip_channels.append(ch)
            down_blocks.append(blocks)
            if level < self.num_levels - 1:
                downsamplers.append(Downsample(ch))
                skip_channels.append(ch)
        return down_blocks, downsamplers, skip_channels

    def _decoder(
        self,
        block: BlockFactory,
        ch: int,
        skip_channels: list[int],
        channel_mult: Sequence[int],
        num_res_blocks: int,
        attention_levels: set[int],
    ) -> tuple[nn.ModuleList, nn.ModuleList, int]:
        """The up path from `ch` channels: per level, deepest first, its blocks (each takes a
        skip from `skip_channels`, popped) and (but the last) an upsampler; and its channels."""
        up_blocks, upsamplers = nn.ModuleList(), nn.ModuleList()
        for level, mult in reversed(list(enumerate(channel_mult))):
            blocks = nn.ModuleList()
            for _ in range(num_res_blocks + 1):
                cin = ch + skip_channels.pop()
                blocks.append(block(cin, self.model_channels * mult, level in attention_levels))
                ch = self.model_channels * mult
            up_blocks.append(blocks)
            if level > 0:
                upsamplers.append(Upsample(ch))
        return up_blocks, upsamplers, ch

    def _embedding(
        self,
        c_noise: torch.Tensor,
        batch: int,
        num_frames: int,
        pooled: torch.Tensor | None,
        extra_emb: torch.Tensor | None,
    ) -> torch.Tensor:
        c_noise = torch.as_tensor(c_noise, device=self.conv_in.weight.device).reshape(-1)
        if c_noise.numel() == 1:
            c_noise = c_noise.expand(batch)
        emb = self.time_embed(
            timestep_embedding(c_noise, self.model_channels).to(self.conv_in.weight.dtype)
        )
        if self.pooled_embed is not None and pooled is not None:
            emb = emb + self.pooled_embed(pooled)
        if extra_emb is not None:
            if extra_emb.shape[0] != batch:  # one row per video: repeat it for its frames
                extra_emb = repeat(extra_emb, "b d -> (b f) d", f=num_frames)
            emb = emb + extra_emb
        return emb

    def _run(self, blk: UNetBlock, h: torch.Tensor, *args) -> torch.Tensor:
        if self.checkpoint and self.training and torch.is_grad_enabled():
            return checkpoint_fn(blk, h, *args, use_reentrant=False)
        return blk(h, *args)

    def forward(
        self,
        x: torch.Tensor,
        c_noise: torch.Tensor,
        context: torch.Tensor | None = None,
        context_mask: torch.Tensor | None = None,
        pooled: torch.Tensor | None = None,
        num_frames: int = 1,
        extra_emb: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """x: (b c h w), or (b f) c h w for video; c_noise: (b,) or a scalar; context:
        (b, n, context_dim) with context_mask (b, n) bool (True = real token); pooled:
        (b, pooled_dim); extra_emb: (b, emb_dim) or one row per video. Returns (b, out, h, w)."""
        factor = 2 ** (self.num_levels - 1)
        if x.shape[-1] % factor or x.shape[-2] % factor:
            raise ValueError(f"UNet input size {tuple(x.shape[-2:])} must be divisible by {factor}")
        emb = self._embedding(c_noise, x.shape[0], num_frames, pooled, extra_emb)
        args = (emb, context, context_mask, num_frames)

        h = self.conv_in(x)
        skips = [h]
        for level, blocks in enumerate(self.down_blocks):
            for blk in blocks:
                h = self._run(blk, h, *args)
                skips.append(h)
            if level < self.num_levels - 1:
                h = self.downsamplers[level](h)
                skips.append(h)
        for blk in self.mid_blocks:
            h = self._run(blk, h, *args)
        for i, blocks in enumerate(self.up_blocks):
            for blk in blocks:
                h = self._run(blk, torch.cat([h, skips.pop()], dim=1), *args)
            if i < self.num_levels - 1:
                h = self.upsamplers[i](h)
        return self.conv_out(F.silu(self.norm_out(h)))
