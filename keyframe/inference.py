"""The keyframe pipeline's steps as plain functions (keyframe.pipeline calls them in order):
inputs checked, prompts encoded, starting noise (shared with anchors) and the guided draw.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence
from typing import TYPE_CHECKING, Any

import torch

from keyframe.consistency import anchor_list, anchored_attention, share_noise
from keyframe.diffusion import Denoiser
from keyframe.errors import UserError
from keyframe.sampling import Generator, cfg_denoiser, randn

if TYPE_CHECKING:
    from keyframe.model import KeyframeModel


Draw = Callable[..., torch.Tensor]  # draw(noise, index=None) -> latents


def image_generators(seed: int, count: int) -> list[torch.Generator]:
    """One CPU generator per image, seeded seed, seed + 1, ...: image i depends only on seed + i,
    so one storyboard panel can be re-rolled alone and the noise is the same on every device."""
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < 2**63 - count:
        raise UserError(f"seed: expected an integer from 0 to 2**63 - 1, got {seed!r}")
    return [torch.Generator().manual_seed(seed + i) for i in range(count)]


@contextlib.contextmanager
def eval_mode(model: torch.nn.Module) -> Iterator[None]:
    """`model` in eval mode inside the block; after it, every submodule back in the mode it was
    in (a trainer's EMA copies, shared by its sampling model, stay in eval mode)."""
    modes = [(module, module.training) for module in model.modules()]
    model.eval()
    try:
        yield
    finally:
        for module, training in modes:
            module.training = training


def prompt_list(prompts: str | Sequence[str], name: str) -> list[str]:
    """One prompt or a sequence of them as a list; a UserError names an entry that is not text."""
    prompts = [prompts] if isinstance(prompts, str) else list(prompts)
    for i, prompt in enumerate(prompts):
        if not isinstance(prompt, str):
            raise UserError(f"{name} {i}: expected text, got {type(prompt).__name__}")
    return prompts


def prompts_and_negatives(
    prompts: str | Sequence[str], negative_prompts: str | Sequence[str] | None
) -> tuple[list[str], list[str]]:
    """The prompts (at least one) and one negative prompt per prompt ("" for none)."""
    prompts = prompt_list(prompts, "prompt")
    if not prompts:
        raise UserError("prompts: expected at least one prompt")
    n = len(prompts)
    if negative_prompts is None or isinstance(negative_prompts, str):
        return prompts, [negative_prompts or ""] * n
    negatives = prompt_list(negative_prompts, "negative prompt")
    if len(negatives) != n:
        raise UserError(f"negative prompts: expected {n} (one per prompt), got {len(negatives)}")
    return prompts, negatives


def anchors_and_place(
    n: int, anchor: Any, noise_share: float, place: bool | None, default_place: bool
) -> tuple[tuple[int, ...] | None, bool]:
    """Each image's anchor (None: no consistency) and whether to place subjects (None:
    `default_place` unless anchored); a UserError for a noise share without an anchor and for
    placement with one."""
    anchors = None
    if anchor is not None:
        anchors = anchor_list(anchor, n)
    elif noise_share:
        raise UserError("noise share: needs an anchor")
    if place is None:
        place = default_place and anchors is None
    if place and anchors is not None:
        raise UserError("place: cannot be combined with an anchor (consistency) yet")
    return anchors, place


def encode_prompts(
    model: KeyframeModel, prompts: list[str], negatives: list[str]
) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """(cond, uncond) U-Net conditioning from the EMA text tower, encoded in one batch."""
    n = len(prompts)
    both = model.encode_text(negatives + prompts)
    return {k: v[n:] for k, v in both.items()}, {k: v[:n] for k, v in both.items()}


def start_noise(
    model: KeyframeModel,
    shape: tuple[int, ...],
    generator: Generator,
    anchors: Sequence[int] | None,
    noise_share: float,
) -> tuple[tuple[int, ...] | torch.Tensor, contextlib.AbstractContextManager]:
    """Without anchors: the shape (the sampler draws the noise) and no context. With them: noise
    sharing `noise_share` of each anchor's, and the context that lets images attend to their
    anchors."""
    if anchors is None:
        return shape, contextlib.nullcontext()
    noise = share_noise(randn(shape, generator, model.device), anchors, noise_share)
    return noise, anchored_attention(model.denoiser, anchors)


def drawer(
    denoiser: Denoiser,
    cond: dict[str, torch.Tensor],
    uncond: dict[str, torch.Tensor],
    guidance: float,
    generator: Generator,
    solve: Callable[..., torch.Tensor],
    anchoring: contextlib.AbstractContextManager,
) -> Draw:
    """draw(noise, index=None): guided latents from noise, for the images at `index` (all if
    None), with their own conditioning and generators."""

    def draw(noise: torch.Tensor, index: list[int] | None = None) -> torch.Tensor:
        gen, pick, unpick = generator, cond, uncond
        if index is not None:
            pick = {k: v[index] for k, v in cond.items()}
            unpick = {k: v[index] for k, v in uncond.items()}
            gen = [generator[i] for i in index] if isinstance(generator, Sequence) else gen
        run = cfg_denoiser(float32_io(denoiser), pick, unpick, guidance)
        with anchoring:
            return solve(run, noise, generator=gen)

    return draw


def float32_io(denoiser: Denoiser) -> Callable[..., torch.Tensor]:
    """The denoiser on inputs in its own dtype (e.g. fp16 weights) with float32 results, so the
    samplers always integrate in float32. Conditioning that is not a float tensor passes as is."""
    dtype = next(denoiser.parameters()).dtype

    def denoise(x: torch.Tensor, sigma: torch.Tensor, **cond: Any) -> torch.Tensor:
        cond = {
            k: v.to(dtype) if isinstance(v, torch.Tensor) and v.is_floating_point() else v
            for k, v in cond.items()
        }
        return denoiser(x.to(dtype), sigma, **cond).float()

    return denoise
