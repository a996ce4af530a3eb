"""Samplers over the one contract `denoise(x, sigma) -> x0` (sigma of shape (b,)), plus guidance.

Conditioning is bound into `denoise` by a closure before sampling (see `cfg_denoiser`), so the
samplers only ever see noisy samples and noise levels. Each sampler takes `x` already scaled to
`sigmas[0]` and a decreasing schedule ending in 0 (`keyframe.diffusion.karras_sigmas`), and calls
`callback({"i", "steps", "sigma", "sigma_hat", "x", "denoised"})` once per step.

`generator` may be one `torch.Generator` or a list with one per sample, so that a sample's result
does not depend on what else is in its batch (re-rolling one storyboard panel keeps the others).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch

from keyframe.diffusion import append_dims, karras_sigmas
from keyframe.sampling_options import check_sampling_options

Denoise = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
Callback = Callable[[dict[str, Any]], None]
Generator = torch.Generator | Sequence[torch.Generator] | None


def randn(
    shape: Sequence[int],
    generator: Generator = None,
    device: torch.device | str | None = None,
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """Unit Gaussian noise drawn on the generator's device (so seeds agree across devices)."""
    if isinstance(generator, Sequence):
        if len(generator) != shape[0]:
            raise ValueError(f"got {len(generator)} generators for a batch of {shape[0]}")
        return torch.cat([randn((1, *shape[1:]), g, device, dtype) for g in generator])
    gen_device = generator.device if generator is not None else device
    return torch.randn(shape, generator=generator, device=gen_device, dtype=dtype).to(device)


def _noise_like(x: torch.Tensor, generator: Generator) -> torch.Tensor:
    return randn(x.shape, generator, x.device, x.dtype)


def _per_sample(sigma: float, x: torch.Tensor) -> torch.Tensor:
    return x.new_full((x.shape[0],), sigma)


def _churn(x, sigma, steps, s_churn, s_tmin, s_tmax, s_noise, generator):
    """Karras et al. 2022 Alg. 2 lines 4-6: raise the noise level to sigma_hat by adding noise."""
    gamma = min(s_churn / steps, math.sqrt(2) - 1) if s_tmin <= sigma <= s_tmax else 0.0
    sigma_hat = sigma * (1 + gamma)
    if gamma > 0:
        x = x + _noise_like(x, generator) * s_noise * math.sqrt(sigma_hat**2 - sigma**2)
    return x, sigma_hat


def _report(callback, i, steps, sigma, sigma_hat, x, denoised):
    if callback is not None:
        callback(
            {
                "i": i,
                "steps": steps,
                "sigma": sigma,
                "sigma_hat": sigma_hat,
                "x": x,
                "denoised": denoised,
            }
        )


@torch.no_grad()
def sample_euler(
    denoise: Denoise,
    x: torch.Tensor,
    sigmas: torch.Tensor,
    *,
    generator: Generator = None,
    callback: Callback | None = None,
    s_churn: float = 0.0,
    s_tmin: float = 0.0,
    s_tmax: float = float("inf"),
    s_noise: float = 1.0,
) -> torch.Tensor:
    """Euler steps of the probability-flow ODE: Karras et al. 2022, Algorithm 2 with Euler steps.

    With s_churn = 0 it is deterministic; s_churn > 0 adds Alg. 2's noise for sigma in
    [s_tmin, s_tmax], scaled by s_noise.
    """
    levels = sigmas.tolist()
    steps = len(levels) - 1
    for i in range(steps):
        x, sigma_hat = _churn(x, levels[i], steps, s_churn, s_tmin, s_tmax, s_noise, generator)
        denoised = denoise(x, _per_sample(sigma_hat, x))
        _report(callback, i, steps, levels[i], sigma_hat, x, denoised)
        d = (x - denoised) / sigma_hat
        x = x + d * (levels[i + 1] - sigma_hat)
    return x


@torch.no_grad()
def sample_heun(
    denoise: Denoise,
    x: torch.Tensor,
    sigmas: torch.Tensor,
    *,
    generator: Generator = None,
    callback: Callback | None = None,
    s_churn: float = 0.0,
    s_tmin: float = 0.0,
    s_tmax: float = float("inf"),
    s_noise: float = 1.0,
) -> torch.Tensor:
    """Heun's 2nd-order method: Karras et al. 2022, Algorithm 2 (Algorithm 1 when s_churn = 0).

    The last step, to sigma = 0, is an Euler step (EDM does the same); so `steps` steps cost
    2 * steps - 1 network evaluations.
    """
    levels = sigmas.tolist()
    steps = len(levels) - 1
    for i in range(steps):
        x, sigma_hat = _churn(x, levels[i], steps, s_churn, s_tmin, s_tmax, s_noise, generator)
        denoised = denoise(x, _per_sample(sigma_hat, x))
        _report(callback, i, steps, levels[i], sigma_hat, x, denoised)
        d = (x - denoised) / sigma_hat
        dt = levels[i + 1] - sigma_hat
        if levels[i + 1] == 0:
            x = x + d * dt
            continue
        x_next = x + d * dt
        d_next = (x_next - denoise(x_next, _per_sample(levels[i + 1], x))) / levels[i + 1]
        x = x + (d + d_next) / 2 * dt
    return x


@torch.no_grad()
def sample_dpmpp_2m(
    denoise: Denoise,
    x: torch.Tensor,
    sigmas: torch.Tensor,
    *,
    generator: Generator = None,
    callback: Callback | None = None,
) -> torch.Tensor:
    """DPM-Solver++(2M): Lu et al. 2022, "DPM-Solver++: Fast Solver for Guided Sampling of
    Diffusion Probabilistic Models", Algorithm 2, in sigma space (t = -ln sigma) as in k-diffusion.

    Deterministic (the generator is unused); one network evaluation per step.
    """
    del generator
    levels = sigmas.tolist()
    steps = len(levels) - 1
    previous = None
    for i in range(steps):
        sigma, sigma_next = levels[i], levels[i + 1]
        denoised = denoise(x, _per_sample(sigma, x))
        _report(callback, i, steps, sigma, sigma, x, denoised)
        if sigma_next == 0:
            x = denoised
            continue
        h = math.log(sigma / sigma_next)
        if previous is None:
            estimate = denoised
        else:
            r = math.log(levels[i - 1] / sigma) / h
            estimate = (1 + 1 / (2 * r)) * denoised - (1 / (2 * r)) * previous
        x = (sigma_next / sigma) * x - math.expm1(-h) * estimate
        previous = denoised
    return x


def _ancestral_step(sigma: float, sigma_next: float, eta: float) -> tuple[float, float]:
    """Split the step to sigma_next into a deterministic part (down) and fresh noise (up)."""
    if eta == 0 or sigma_next == 0:
        return sigma_next, 0.0
    up = eta * math.sqrt(sigma_next**2 * (sigma**2 - sigma_next**2) / sigma**2)
    up = min(sigma_next, up)
    return math.sqrt(sigma_next**2 - up**2), up


@torch.no_grad()
def sample_euler_ancestral(
    denoise: Denoise,
    x: torch.Tensor,
    sigmas: torch.Tensor,
    *,
    generator: Generator = None,
    callback: Callback | None = None,
    eta: float = 1.0,
    s_noise: float = 1.0,
) -> torch.Tensor:
    """Euler steps with ancestral noise (k-diffusion's `euler_ancestral`, Crowson 2022).

    Each step goes down to sigma_down by Euler and adds fresh noise sigma_up, with
    sigma_down^2 + sigma_up^2 = sigma_next^2; eta = 1 draws DDPM's ancestral posterior variance
    (Ho et al. 2020; Song et al. 2021, DDIM eta), eta = 0 is the deterministic Euler sampler.
    """
    levels = sigmas.tolist()
    steps = len(levels) - 1
    for i in range(steps):
        sigma = levels[i]
        denoised = denoise(x, _per_sample(sigma, x))
        _report(callback, i, steps, sigma, sigma, x, denoised)
        down, up = _ancestral_step(sigma, levels[i + 1], eta)
        x = x + (x - denoised) / sigma * (down - sigma)
        if up > 0:
            x = x + _noise_like(x, generator) * s_noise * up
    return x


SAMPLERS: dict[str, Callable[..., torch.Tensor]] = {
    "euler": sample_euler,
    "euler_ancestral": sample_euler_ancestral,
    "heun": sample_heun,
    "dpmpp_2m": sample_dpmpp_2m,
}


def sample(
    denoise: Denoise,
    shape_or_noise: Sequence[int] | torch.Tensor,
    steps: int,
    sampler: str = "dpmpp_2m",
    sigma_min: float = 0.002,
    sigma_max: float = 80.0,
    rho: float = 7.0,
    generator: Generator = None,
    callback: Callback | None = None,
    device: torch.device | str | None = None,
    init: torch.Tensor | None = None,
    **options: Any,
) -> torch.Tensor:
    """Draw samples: unit noise (a shape to draw with `generator`, or a given tensor) is scaled
    to sigma_max and run through the named sampler on a Karras schedule of `steps` steps.

    With `init` (clean latents of the noise's shape) the run starts from init + sigma_max * noise
    and refines it (SDEdit, Meng et al. 2022): a low sigma_max keeps init's layout and detail.

    `options` go to the sampler (e.g. `s_churn` for euler/heun, `eta` for euler_ancestral).
    """
    check_sampling_options(steps, sampler=sampler)  # a guard for direct callers: cheap
    if isinstance(shape_or_noise, torch.Tensor):
        noise = shape_or_noise.to(device) if device is not None else shape_or_noise
    else:
        noise = randn(tuple(shape_or_noise), generator, device)
    sigmas = karras_sigmas(steps, sigma_min, sigma_max, rho)
    x = noise * sigma_max
    if init is not None:
        if init.shape != x.shape:
            raise ValueError(f"init has shape {tuple(init.shape)}, the noise {tuple(x.shape)}")
        x = x + init.to(x)
    run = SAMPLERS[sampler]
    return run(denoise, x, sigmas, generator=generator, callback=callback, **options)


def _concat(uncond: Mapping[str, Any], cond: Mapping[str, Any]) -> dict[str, Any]:
    """One batch of [uncond; cond]: tensors and lists are joined along the batch."""
    if set(uncond) != set(cond):
        raise ValueError(
            f"cond and uncond need the same keys, got {sorted(cond)}, {sorted(uncond)}"
        )
    joined = {}
    for key, c in cond.items():
        u = uncond[key]
        if isinstance(c, torch.Tensor):
            joined[key] = torch.cat([u, c])
        elif isinstance(c, (list, tuple)):
            joined[key] = [*u, *c]
        elif u is c or u == c:
            joined[key] = c  # not batched (e.g. None): shared as it is
        else:
            raise TypeError(f"cannot batch conditioning {key!r} of type {type(c).__name__}")
    return joined


def cfg_denoiser(
    denoise: Callable[..., torch.Tensor],
    cond: Mapping[str, Any],
    uncond: Mapping[str, Any],
    scale: float | torch.Tensor,
) -> Denoise:
    """Classifier-free guidance (Ho & Salimans 2022): uncond + scale * (cond - uncond).

    `denoise(x, sigma, **cond)` is called once on a double batch [uncond; cond]. `scale` is a float
    or a tensor broadcastable to x (e.g. (b, 1, f, 1, 1) for a per-frame scale); a 1-D tensor is
    taken per sample. Scale 1 is exactly the conditional denoiser and costs one pass.
    """
    joined = _concat(uncond, cond)

    def guided(x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        if isinstance(scale, (int, float)):
            if scale == 1:
                return denoise(x, sigma, **cond)
            if scale == 0:
                return denoise(x, sigma, **uncond)
            weight = scale
        else:
            weight = scale.to(x.device, x.dtype)
            weight = append_dims(weight, x.ndim) if weight.ndim == 1 else weight
        sigma = torch.as_tensor(sigma, device=x.device).expand(x.shape[0])
        u, c = denoise(torch.cat([x, x]), torch.cat([sigma, sigma]), **joined).chunk(2)
        return u + weight * (c - u)

    return guided
