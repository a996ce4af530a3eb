"""Frame quality: PSNR and SSIM of frames in [-1, 1], and an autoencoder's round trip (quality
and speed), shared by autoencoder training, `animatic eval` and the benchmarks."""

from __future__ import annotations

import time

import torch
import torch.nn.functional as F
from einops import rearrange

from keyframe.autoencoder import Autoencoder


def psnr(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean per-frame PSNR (dB) of frames in [-1, 1], measured after mapping them to [0, 1]."""
    a = (pred.float().clamp(-1, 1) + 1) / 2
    b = (target.float().clamp(-1, 1) + 1) / 2
    mse = ((a - b) ** 2).flatten(1).mean(1).clamp_min(1e-10)
    return (-10 * torch.log10(mse)).mean()


def ssim(pred: torch.Tensor, target: torch.Tensor, window: int = 11, sigma: float = 1.5):
    """Mean SSIM (Wang et al. 2004, Gaussian window 11, sigma 1.5) of frames in [-1, 1]."""
    a = (pred.float().clamp(-1, 1) + 1) / 2
    b = (target.float().clamp(-1, 1) + 1) / 2
    window = min(window, a.shape[-1], a.shape[-2])
    coords = torch.arange(window, dtype=torch.float32, device=a.device) - (window - 1) / 2
    g = torch.exp(-(coords**2) / (2 * sigma**2))
    g = g / g.sum()
    c = a.shape[1]
    kernel = (g[:, None] * g[None, :]).expand(c, 1, window, window)

    def blur(x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(x, kernel, groups=c)

    c1, c2 = 0.01**2, 0.03**2
    mu_a, mu_b = blur(a), blur(b)
    var_a = blur(a * a) - mu_a**2
    var_b = blur(b * b) - mu_b**2
    cov = blur(a * b) - mu_a * mu_b
    s = ((2 * mu_a * mu_b + c1) * (2 * cov + c2)) / (
        (mu_a**2 + mu_b**2 + c1) * (var_a + var_b + c2)
    )
    return s.mean()


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@torch.no_grad()
def reconstruction_metrics(ae: Autoencoder, frames: torch.Tensor, chunk: int = 32) -> dict:
    """Encode then decode `frames` (n c h w or b c f h w, in [-1, 1]): PSNR (dB), SSIM, and
    frames per second for each direction on the autoencoder's device."""
    if frames.ndim == 5:
        frames = rearrange(frames, "b c f h w -> (b f) c h w")
    device, _ = ae._compute_place(frames)
    n = frames.shape[0]
    _sync(device)
    t0 = time.perf_counter()
    z = ae.encode(frames, chunk=chunk)
    _sync(device)
    t1 = time.perf_counter()
    rec = ae.decode(z, chunk=chunk)
    _sync(device)
    t2 = time.perf_counter()
    return {
        "psnr": float(psnr(rec, frames)),
        "ssim": float(ssim(rec, frames)),
        "encode_fps": n / max(t1 - t0, 1e-9),
        "decode_fps": n / max(t2 - t1, 1e-9),
    }
