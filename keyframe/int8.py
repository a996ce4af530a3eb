"""Weight-only int8 storage for shipped models: half the size of fp16 on disk, fp16 in memory.

Each weight matrix or kernel of the diffusion networks (`net.*`, `text.*`) is stored as int8
with one scale per output channel (symmetric absmax: w ~ q * scale, |q| <= 127), under the same
key, its scale under `int8_scale.<key>`; biases, norms and the autoencoder stay fp16 (the
autoencoder's reconstructions are the most sensitive to rounding). Reading dequantizes at load,
so sampling runs exactly as with any other weights.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch

SCALE_PREFIX = "int8_scale."
QUANTIZED_PARTS = ("net.", "text.")


def quantizable(key: str, value: torch.Tensor) -> bool:
    """Matrices and kernels of the diffusion networks (not biases, norms, position tables or
    the autoencoder)."""
    return (
        key.startswith(QUANTIZED_PARTS)
        and key.endswith(".weight")
        and value.is_floating_point()
        and value.ndim >= 2
    )


def quantize(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """`state` with every quantizable tensor as int8 plus its per-output-channel scale (fp16)."""
    out = {}
    for key, value in state.items():
        if not quantizable(key, value):
            out[key] = value
            continue
        flat = value.detach().float().reshape(value.shape[0], -1)
        scale = flat.abs().amax(1).clamp_min(1e-12) / 127
        out[key] = (
            (flat / scale[:, None]).round().clamp(-127, 127).to(torch.int8).reshape(value.shape)
        )
        out[SCALE_PREFIX + key] = scale.half()
    return out


def dequantize(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Weights as written by `quantize` back to fp16 tensors (other tensors pass through)."""
    out = {}
    for key, value in state.items():
        if key.startswith(SCALE_PREFIX):
            continue
        scale = state.get(SCALE_PREFIX + key)
        if scale is not None:
            shape = (-1,) + (1,) * (value.ndim - 1)
            value = (value.float() * scale.float().reshape(shape)).half()
        out[key] = value
    return out
