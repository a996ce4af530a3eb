"""The interpolation model's sampling steps: frames to latents and back, the text conditions, and
one window of frames drawn around its known ones. Plain functions whose first argument is the
InterpolateModel, which has them as methods; interpolate.inbetween strings the windows together.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import torch
from einops import rearrange

from interpolate.flow import check_init
from keyframe.errors import UserError
from keyframe.inference import eval_mode, float32_io
from keyframe.sampling import Callback, cfg_denoiser
from keyframe.sampling import sample as run_sampler
from keyframe.sampling_options import sampling_defaults, with_defaults

if TYPE_CHECKING:
    from interpolate.model import InterpolateModel

Denoise = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def check_frame_size(model: InterpolateModel, height: int, width: int) -> None:
    """A UserError unless both sides are positive multiples of the model's `size_multiple`."""
    m = model.size_multiple
    if min(height, width) < 1 or height % m or width % m:
        raise UserError(f"frame size {height}x{width}: must be multiples of {m} for this model")


@torch.no_grad()
def encode_frames(model: InterpolateModel, frames: torch.Tensor) -> torch.Tensor:
    """(n, c, H, W) images in [-1, 1] -> (n, latent, h, w) latents on the model's device."""
    check_frame_size(model, *frames.shape[-2:])
    ae = model.autoencoder
    return ae.encode(frames.to(model.device, next(iter(model.parameters())).dtype)).float()


@torch.no_grad()
def decode_frames(model: InterpolateModel, latents: torch.Tensor) -> torch.Tensor:
    """(n, latent, h, w) -> (n, c, H, W) float images in [-1, 1] on the CPU."""
    return model.autoencoder.decode(latents).float().clamp(-1, 1).cpu()


@torch.no_grad()
def sampling_conditions(
    model: InterpolateModel, prompt: str | None = None, guidance: float | None = None
) -> dict[str, Any]:
    """Text conditioning for sampling: {"cond", "uncond", "guidance"}, encoded once and
    shared by every window. Without a text model a prompt is refused."""
    guidance = with_defaults(sampling_defaults(model.config), guidance=guidance)["guidance"]
    if model.text is None:
        if prompt:
            raise UserError("prompt: this interpolation model has no text conditioning")
        return {"cond": {}, "uncond": None, "guidance": 1.0}
    if prompt is not None and not isinstance(prompt, str):
        raise UserError(f"prompt: expected text, got {type(prompt).__name__}")
    both = model.encode_text(["", prompt or ""])
    uncond = {k: v[:1] for k, v in both.items()}
    cond = {k: v[1:] for k, v in both.items()}
    if not prompt or guidance == 1:
        return {"cond": cond, "uncond": None, "guidance": 1.0}
    return {"cond": cond, "uncond": uncond, "guidance": float(guidance)}


@torch.no_grad()
def sample_window(
    model: InterpolateModel,
    latents: Sequence[torch.Tensor | None],
    known: Sequence[bool],
    conditions: Mapping[str, Any],
    steps: int | None = None,
    sampler: str | None = None,
    fps: float | None = None,
    generator: torch.Generator | None = None,
    callback: Callback | None = None,
    init: torch.Tensor | None = None,
    init_sigma: float | None = None,
) -> torch.Tensor:
    """Sample one window: `latents` (c, h, w) per frame (None where unknown), `known` per
    frame. Returns (f, c, h, w) latents with the known frames exactly as given.

    `init` (f, c, h, w): latents to refine from noise level `init_sigma` (SDEdit) instead of
    drawing the unknown frames from pure noise."""
    # 1. Fill in the defaults (the caller checked what it was given: check_sampling_options).
    chosen = with_defaults(sampling_defaults(model.config), steps=steps, sampler=sampler)
    steps, sampler = chosen["steps"], chosen["sampler"]
    # 2. The window as the network takes it, and the denoiser that keeps the known frames.
    known_latents, mask, extra = _window_inputs(model, latents, known, fps)
    denoise = _window_denoiser(model, conditions, extra, known_latents, mask)
    # 3. Sample the whole window from noise (or refine `init`), in eval mode.
    noise = torch.randn((1, *known_latents.shape[1:]), generator=generator).to(model.device)
    with eval_mode(model):
        refine = _refine_options(init, init_sigma, known_latents, mask)
        out = run_sampler(
            denoise, noise, steps, sampler, generator=generator, callback=callback, **refine
        )
    out = torch.where(mask, known_latents, out)
    return rearrange(out[0], "c f h w -> f c h w")


def _window_inputs(
    model: InterpolateModel,
    latents: Sequence[torch.Tensor | None],
    known: Sequence[bool],
    fps: float | None,
) -> tuple[torch.Tensor, torch.Tensor, dict[str, torch.Tensor | None]]:
    """The known latents (1, c, f, h, w), zeros where unknown; the mask (1, 1, f, 1, 1) bool
    (True = known); and the network's frame conditioning {known, mask, fps} (fps None without
    fps conditioning; default sample_fps)."""
    hp, device = model.config, model.device
    reference = next(z for z in latents if z is not None)
    frames = [
        z.to(device).float() if k else torch.zeros_like(reference, device=device).float()
        for z, k in zip(latents, known, strict=True)
    ]
    known_latents = rearrange(torch.stack(frames), "f c h w -> 1 c f h w")
    mask = torch.tensor(list(known), device=device)[None, None, :, None, None]
    fps_value = (hp.sample_fps if fps is None else fps) if hp.fps_conditioning else None
    extra = {
        "known": known_latents,
        "mask": mask.float(),
        "fps": None if fps_value is None else torch.tensor([float(fps_value)], device=device),
    }
    return known_latents, mask, extra


def _window_denoiser(
    model: InterpolateModel,
    conditions: Mapping[str, Any],
    extra: Mapping[str, torch.Tensor | None],
    known_latents: torch.Tensor,
    mask: torch.Tensor,
) -> Denoise:
    """The model's denoiser with the window's conditioning (guided when `conditions` has an uncond)
    whose output keeps the known frames exactly."""
    raw = float32_io(model.denoiser)
    cond = {**conditions["cond"], **extra}
    if conditions["uncond"] is not None:
        uncond = {**conditions["uncond"], **extra}
        guided = cfg_denoiser(raw, cond, uncond, conditions["guidance"])
    else:

        def guided(x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
            return raw(x, sigma, **cond)

    def denoise(x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        return torch.where(mask, known_latents, guided(x, sigma))

    return denoise


def _refine_options(
    init: torch.Tensor | None,
    init_sigma: float | None,
    known_latents: torch.Tensor,
    mask: torch.Tensor,
) -> dict[str, Any]:
    """The sampler's SDEdit arguments: start from `init` (f, c, h, w; the known frames as given)
    at noise level `init_sigma`; none without `init`."""
    if init is None:
        return {}
    check_init("flow", init_sigma)
    start = rearrange(init.to(known_latents.device).float(), "f c h w -> 1 c f h w")
    if start.shape != known_latents.shape:
        raise ValueError(f"init: expected {tuple(known_latents.shape)} latents")
    return {"sigma_max": float(init_sigma), "init": torch.where(mask, known_latents, start)}
