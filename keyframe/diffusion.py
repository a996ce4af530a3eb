"""The one diffusion formulation: EDM (Karras et al. 2022, "Elucidating the Design Space of
Diffusion-Based Generative Models") in sigma space, shared by the keyframe and interpolation stages.

A sample is x = x0 + sigma * n with n ~ N(0, I). `Denoiser` wraps a raw network F with EDM's
preconditioning so that D(x, sigma) = c_skip * x + c_out * F(c_in * x, c_noise) estimates x0.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from keyframe.errors import UserError


def append_dims(t: torch.Tensor, ndim: int) -> torch.Tensor:
    """View a (b,) tensor as (b, 1, ..., 1) with `ndim` dims, to broadcast over images or videos."""
    return t.reshape(*t.shape, *([1] * (ndim - t.ndim)))


def _batch_sigma(sigma: torch.Tensor | float, x: torch.Tensor) -> torch.Tensor:
    """Sigma as a (b,) tensor on x's device, at least float32 (also for half-precision x); a
    scalar is shared by the whole batch."""
    dtype = torch.promote_types(x.dtype, torch.float32)
    sigma = torch.as_tensor(sigma, device=x.device).to(dtype)
    if sigma.ndim == 0:
        return sigma.expand(x.shape[0])
    if sigma.shape != (x.shape[0],):
        raise ValueError(f"sigma must be a scalar or have shape ({x.shape[0]},), got {sigma.shape}")
    return sigma


class Denoiser(nn.Module):
    """EDM preconditioning and training loss around a network `net(x, c_noise, **cond)`.

    `forward(x, sigma, **cond)` returns the estimate of x0; sigma has shape (b,) (or is a scalar)
    and is broadcast over any trailing dims (images `b c h w`, videos `b c f h w`).
    """

    def __init__(self, net: nn.Module, sigma_data: float = 0.5):
        super().__init__()
        self.net = net
        self.sigma_data = sigma_data

    def scalings(self, sigma: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """EDM Table 1: (c_skip, c_out, c_in, c_noise) for a tensor of sigmas."""
        sd2 = self.sigma_data**2
        c_skip = sd2 / (sigma**2 + sd2)
        c_out = sigma * self.sigma_data / (sigma**2 + sd2).sqrt()
        c_in = 1 / (sigma**2 + sd2).sqrt()
        # ln(0) would give the net -inf at sigma = 0, where c_out = 0 ignores its output anyway.
        c_noise = sigma.clamp_min(1e-20).log() / 4
        return c_skip, c_out, c_in, c_noise

    def _raw(self, x: torch.Tensor, sigma: torch.Tensor, cond: Mapping[str, Any]):
        """The network's output F and the broadcast c_skip, c_out for this batch."""
        c_skip, c_out, c_in, c_noise = self.scalings(sigma)
        c_skip, c_out, c_in = (append_dims(c, x.ndim).to(x.dtype) for c in (c_skip, c_out, c_in))
        return self.net(c_in * x, c_noise, **cond), c_skip, c_out

    def forward(self, x: torch.Tensor, sigma: torch.Tensor | float, **cond: Any) -> torch.Tensor:
        sigma = _batch_sigma(sigma, x)
        out, c_skip, c_out = self._raw(x, sigma, cond)
        return c_skip * x + c_out * out

    def loss(
        self,
        x0: torch.Tensor,
        sigma: torch.Tensor,
        noise: torch.Tensor | None = None,
        weight: torch.Tensor | None = None,
        **cond: Any,
    ) -> torch.Tensor:
        """EDM loss lambda(sigma) * |D(x0 + sigma n) - x0|^2, averaged to a scalar.

        It is computed in the network's output space (lambda * c_out^2 = 1, as k-diffusion does),
        which is the same value without cancelling large numbers at small sigma. `weight`
        (broadcastable to x0, e.g. a mask of unknown frames `b 1 f 1 1`) makes it a weighted mean:
        sum(w * err) / sum(w), counted per element, so masked-out elements do not dilute it.
        """
        sigma = _batch_sigma(sigma, x0)
        if noise is None:
            noise = torch.randn_like(x0)
        x = x0 + append_dims(sigma, x0.ndim).to(x0.dtype) * noise
        out, c_skip, c_out = self._raw(x, sigma, cond)
        target = (x0 - c_skip * x) / c_out
        err = (out.float() - target.float()).pow(2)  # float32 even under autocast
        if weight is None:
            return err.mean()
        weight = weight.to(err.dtype).expand_as(err)
        return (weight * err).sum() / weight.sum().clamp_min(torch.finfo(err.dtype).tiny)


def sample_training_sigmas(
    n: int,
    p_mean: float = -1.2,
    p_std: float = 1.2,
    generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """Training noise levels: ln(sigma) ~ N(p_mean, p_std^2) (EDM Table 1), shape (n,)."""
    gen_device = generator.device if generator is not None else device
    z = torch.randn(n, generator=generator, device=gen_device)
    return (p_mean + p_std * z).exp().to(device if device is not None else z.device)


def karras_sigmas(
    steps: int,
    sigma_min: float = 0.002,
    sigma_max: float = 80.0,
    rho: float = 7.0,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """Sampling schedule of EDM eq. 5: `steps` sigmas from sigma_max down to sigma_min, then 0."""
    if steps < 1:  # an internal guard: users' steps are checked by check_sampling_options
        raise ValueError(f"karras_sigmas needs at least 1 step, got {steps}")
    if not 0 < sigma_min < sigma_max:
        raise UserError(
            f"sigma_min/sigma_max: expected 0 < min < max, got {sigma_min}, {sigma_max}"
        )
    ramp = torch.linspace(0, 1, steps, dtype=torch.float64)
    lo, hi = sigma_min ** (1 / rho), sigma_max ** (1 / rho)
    sigmas = (hi + ramp * (lo - hi)) ** rho
    return torch.cat([sigmas, sigmas.new_zeros(1)]).float().to(device)


def drop_mask(
    n: int,
    rate: float,
    generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """(n,) bool tensor, True with probability `rate`: which samples lose their conditioning."""
    if not 0 <= rate <= 1:
        raise UserError(f"conditioning dropout rate: expected a value in [0, 1], got {rate}")
    gen_device = generator.device if generator is not None else "cpu"
    drop = torch.rand(n, generator=generator, device=gen_device) < rate
    return drop.to(device) if device is not None else drop


def _null(value: Any, drop: torch.Tensor) -> Any:
    """Replace the dropped entries of a batch: prompts by "" and tensors by zeros."""
    if isinstance(value, torch.Tensor):
        keep = append_dims((~drop).to(value.device), value.ndim)
        return torch.where(keep, value, torch.zeros_like(value))
    if isinstance(value, (list, tuple)) and all(isinstance(v, str) for v in value):
        if len(value) != len(drop):
            raise ValueError(f"expected {len(drop)} prompts, got {len(value)}")
        return type(value)("" if d else v for v, d in zip(value, drop.tolist(), strict=True))
    raise TypeError(f"cannot drop conditioning of type {type(value).__name__}")


def _batch_len(value: Any) -> int:
    return value.shape[0] if isinstance(value, torch.Tensor) else len(value)


def drop_conditioning(cond: Any, rate: float, generator: torch.Generator | None = None) -> Any:
    """Classifier-free guidance training: drop each sample's conditioning with probability `rate`.

    `cond` is a list of prompts (dropped ones become "", the unconditional prompt), a tensor with
    the batch first (dropped rows become zeros), or a dict of these (one decision per sample, shared
    by all entries, so a sample loses all of its conditioning at once).
    """
    if isinstance(cond, Mapping):
        if not cond:
            return dict(cond)
        n = _batch_len(next(iter(cond.values())))
        drop = drop_mask(n, rate, generator)
        return {k: _null(v, drop) for k, v in cond.items()}
    return _null(cond, drop_mask(_batch_len(cond), rate, generator))
