"""Samplers compared at 5-50 steps on an exact Gaussian denoiser (`animatic bench`): trained
weights are not needed, and the probability-flow ODE has a closed-form solution to measure against.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

QUALITY_SAMPLERS = ("euler", "heun", "dpmpp_2m")
QUALITY_STEPS = (5, 10, 20, 25, 30, 50)  # 25 and 30: the shapes configs' sampling steps
QUALITY_TOLERANCES = (0.05, 0.01)  # sampler endpoint errors (of the data std) to report steps for

# tests/test_sampling.py's data: x0 ~ N(MU, STD^2) per dimension, so E[x0 | x] is exact.
GAUSS_MU = torch.tensor([1.0, -0.5, 0.3, 0.0])
GAUSS_STD = torch.tensor([0.5, 0.2, 1.0, 0.05])


def _gaussian_denoise(x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    s2 = GAUSS_STD**2
    return GAUSS_MU + s2 / (s2 + sigma[:, None] ** 2) * (x - GAUSS_MU)


def sampler_quality(
    samplers: Sequence[str] = QUALITY_SAMPLERS,
    steps: Sequence[int] = QUALITY_STEPS,
    n: int = 4096,
    sigma_max: float = 80.0,
) -> list[dict[str, Any]]:
    """Each sampler's error at each step count against the exact solution of the probability
    flow ODE for Gaussian data (x0 = MU + (x_T - MU) * STD / sqrt(STD^2 + sigma_max^2)).

    `ode_error`: RMS distance to that solution over STD (discretisation error alone);
    `std_error` / `mean_error`: worst relative error of the samples' std / mean (the
    distribution the test suite checks). A proxy: trained models are not Gaussian.
    """
    from keyframe.sampling import sample

    noise = torch.randn(n, 4, generator=torch.Generator().manual_seed(0))
    x_t = noise * sigma_max
    exact = GAUSS_MU + (x_t - GAUSS_MU) * GAUSS_STD / (GAUSS_STD**2 + sigma_max**2).sqrt()
    rows = []
    for name in samplers:
        for count in steps:
            calls: list[int] = []

            def denoise(x, sigma, calls=calls):
                calls.append(1)
                return _gaussian_denoise(x, sigma)

            out = sample(denoise, noise.clone(), count, sampler=name, sigma_max=sigma_max)
            rows.append(
                {
                    "section": "samplers",
                    "sampler": name,
                    "steps": count,
                    "nfe": len(calls),
                    "ode_error": float((((out - exact) / GAUSS_STD) ** 2).mean().sqrt()),
                    "std_error": float((out.std(0) / GAUSS_STD - 1).abs().max()),
                    "mean_error": float(((out.mean(0) - GAUSS_MU) / GAUSS_STD).abs().max()),
                }
            )
    return rows


def fewest_steps(rows: Sequence[dict[str, Any]], tolerance: float) -> dict[str, Any]:
    """Per sampler: the fewest measured steps (and NFE) with ode_error under `tolerance`."""
    best: dict[str, Any] = {}
    for row in sorted(rows, key=lambda r: r["steps"]):
        if row["ode_error"] < tolerance and row["sampler"] not in best:
            best[row["sampler"]] = {"steps": row["steps"], "nfe": row["nfe"]}
    return best
