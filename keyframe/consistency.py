"""Training-free keyframe consistency: later panels borrow an anchor panel's look.

Two mechanisms, both without training: panels start from noise mixed with the anchor's
(`share_noise`), and every self-attention of the U-Net lets a panel attend to the anchor's keys
and values as well as its own (`anchored_attention`), as in Text2Video-Zero's cross-frame
attention (Khachatryan et al. 2023) and StoryDiffusion's consistent self-attention (Zhou et al.
2024). The anchor attends to itself alone, so its image is the one it gets sampled alone.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator, Sequence

import torch
from torch import nn

from keyframe.errors import UserError
from keyframe.layers import SpatialTransformer


def anchor_list(anchor: int | Sequence[int], count: int) -> tuple[int, ...]:
    """Each sample's anchor index: one index for all, or one per sample; anchors must be their
    own anchors (no chains). A UserError names the bad entry."""
    anchors = [anchor] * count if isinstance(anchor, int) else list(anchor)
    if len(anchors) != count:
        raise UserError(f"anchor: expected {count} indices (one per prompt), got {len(anchors)}")
    for i, a in enumerate(anchors):
        if isinstance(a, bool) or not isinstance(a, int) or not 0 <= a < count:
            raise UserError(f"anchor {i}: expected an index from 0 to {count - 1}, got {a!r}")
        if anchors[a] != a:
            raise UserError(f"anchor {i}: sample {a} is not its own anchor (got {anchors[a]})")
    return tuple(anchors)


def share_noise(noise: torch.Tensor, anchors: Sequence[int], noise_share: float) -> torch.Tensor:
    """sqrt(1 - m) * own + sqrt(m) * anchor's noise, still unit Gaussian; anchors keep theirs."""
    if not 0 <= noise_share <= 1:
        raise UserError(f"noise share: expected a number from 0 to 1, got {noise_share!r}")
    if noise_share == 0:
        return noise
    index = torch.tensor(anchors, device=noise.device)
    mixed = math.sqrt(1 - noise_share) * noise + math.sqrt(noise_share) * noise[index]
    is_anchor = index == torch.arange(len(anchors), device=noise.device)
    return torch.where(is_anchor.view(-1, *[1] * (noise.ndim - 1)), noise, mixed)


@contextlib.contextmanager
def anchored_attention(model: nn.Module, anchors: Sequence[int]) -> Iterator[None]:
    """Inside the block, the self-attention of every transformer block in `model` lets sample i
    of each group of len(anchors) samples attend to sample anchors[i] too (see
    `keyframe.layers.anchor_keys_values`); the batch may hold several groups (CFG's halves)."""
    layers = [m.self_attn for m in model.modules() if isinstance(m, SpatialTransformer)]
    for layer in layers:
        layer.anchors = tuple(anchors)
    try:
        yield
    finally:
        for layer in layers:
            layer.anchors = None
