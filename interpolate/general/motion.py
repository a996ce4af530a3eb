"""Motion fields between two keys, in torch (training and sampling share this code).

The motion of an in-between frame at time t (0 at the left key, 1 at the right) is five
channels per pixel: the flow to the left key (2), the flow to the right key (2), both in pixels
divided by FLOW_UNIT, and the blend m in [-1, 1]: the frame is the two keys warped by their flows
and mixed with weights (1 - t) clamp(1 + m, 0, 1) and t clamp(1 - m, 0, 1), so m = 1 takes the
left key alone (what only it shows), -1 the right, 0 both by time (Super SloMo's visibility
weighting, Jiang et al. 2018). The model diffuses the residual of this motion from `init_motion`:
the flows between the keys (DIS, both ways) carried to time t by Super SloMo's eq. 4.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from einops import rearrange

from interpolate.flow import dis_flow, flow_channel

FLOW_UNIT = 8.0  # pixels (at the working resolution) per unit of the motion channels
MOTION_CHANNELS = 5
COND_CHANNELS = 17  # keys (6), keys warped by the init (6), init flows (4), t (1)


def key_flows(
    a: np.ndarray, b: np.ndarray, both: bool = True
) -> tuple[np.ndarray, np.ndarray | None]:
    """DIS flows a -> b and b -> a (h, w, 2) of two uint8 RGB keys, on their main colour axis,
    padded by a quarter of their size (on the layers world's key pairs, padding by the whole
    size, as interpolate.flow.dis_flows does for the shapes world, missed as much and cost 3.5x).
    `both=False` skips b -> a (None)."""
    g0, g1 = flow_channel(a, b)
    pad = max(8, max(a.shape[:2]) // 4)
    return dis_flow(g0, g1, pad), dis_flow(g1, g0, pad) if both else None


def init_flows(f01: torch.Tensor, f10: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """Flows from time t to both keys (b, 4, f, h, w), in pixels, from the flows between the keys
    f01, f10 (b, 2, h, w) and times t (b, f): F_t0 = -(1-t) t F01 + t^2 F10,
    F_t1 = (1-t)^2 F01 - t (1-t) F10."""
    t = t[:, None, :, None, None].to(f01.dtype)
    a, b = f01[:, :, None], f10[:, :, None]
    to0 = -(1 - t) * t * a + t * t * b
    to1 = (1 - t) ** 2 * a - t * (1 - t) * b
    return torch.cat([to0, to1], 1)


def warp(image: torch.Tensor, flow: torch.Tensor) -> torch.Tensor:
    """Backward warp: out(x) = image(x + flow(x)), bilinear, edges replicated.
    image (n, c, h, w), flow (n, 2, h, w) in pixels."""
    n, _, h, w = flow.shape
    ys, xs = torch.meshgrid(
        torch.arange(h, device=flow.device, dtype=flow.dtype),
        torch.arange(w, device=flow.device, dtype=flow.dtype),
        indexing="ij",
    )
    gx = (xs + flow[:, 0]) * (2 / max(w - 1, 1)) - 1
    gy = (ys + flow[:, 1]) * (2 / max(h - 1, 1)) - 1
    grid = torch.stack([gx, gy], -1)
    return F.grid_sample(image, grid, "bilinear", "border", align_corners=True)


def blend_weights(t: torch.Tensor, m: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Weights of the left and right key (sum 1) at times t for blends m (same shape)."""
    w0 = (1 - t) * (1 + m).clamp(0, 1)
    w1 = t * (1 - m).clamp(0, 1)
    total = w0 + w1
    w0 = torch.where(total > 1e-4, w0 / total.clamp_min(1e-4), 1 - t)
    return w0, 1 - w0


def synthesize(k0, k1, motion: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """Frames (b, c, f, h, w) from keys (b, c, h, w), motion (b, 5, f, h, w) in motion units and
    times t (b, f), at the working resolution (what training scores)."""
    f = motion.shape[2]
    flows = rearrange(motion[:, :4] * FLOW_UNIT, "b c f h w -> (b f) c h w")
    left = warp(rearrange(k0[:, :, None].expand(-1, -1, f, -1, -1), "b c f h w -> (b f) c h w"),
                flows[:, :2])  # fmt: skip
    right = warp(rearrange(k1[:, :, None].expand(-1, -1, f, -1, -1), "b c f h w -> (b f) c h w"),
                 flows[:, 2:])  # fmt: skip
    tt = rearrange(t, "b f -> (b f)")[:, None, None, None].to(motion.dtype)
    w0, w1 = blend_weights(tt, rearrange(motion[:, 4:5], "b c f h w -> (b f) c h w"))
    return rearrange(w0 * left + w1 * right, "(b f) c h w -> b c f h w", f=f)


def condition(k0, k1, init: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """The network's conditioning channels (b, COND_CHANNELS, f, h, w): both keys in [-1, 1],
    both keys warped by the init flows, the init flows in motion units, and t."""
    b, _, f, h, w = init.shape
    keys = torch.cat([k0, k1], 1)[:, :, None].expand(-1, -1, f, -1, -1)
    flows = rearrange(init, "b c f h w -> (b f) c h w")
    left = warp(rearrange(keys[:, :3], "b c f h w -> (b f) c h w"), flows[:, :2])
    right = warp(rearrange(keys[:, 3:], "b c f h w -> (b f) c h w"), flows[:, 2:])
    warped = rearrange(torch.cat([left, right], 1), "(b f) c h w -> b c f h w", f=f)
    times = (t[:, None, :, None, None] * 2 - 1).to(init.dtype).expand(b, 1, f, h, w)
    return torch.cat([keys, warped, init / FLOW_UNIT, times], 1)


def init_motion(init: torch.Tensor) -> torch.Tensor:
    """The init as motion (b, 5, f, h, w): its flows in motion units and blend 0."""
    zero = init.new_zeros(init.shape[0], 1, *init.shape[2:])
    return torch.cat([init / FLOW_UNIT, zero], 1)
