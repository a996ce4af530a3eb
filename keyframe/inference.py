"""The keyframe pipeline: prompts in, images out, with a trained KeyframeModule's EMA weights.

Plain functions whose first argument is the module; KeyframeModule has `sample`, `latent_size`
and `_place` (place_subjects) as methods. The steps: check the inputs, encode prompt and negative
prompt in one batch, draw the starting noise (shared with an anchor for consistency), denoise
with classifier-free guidance, place subjects by their position words (optional), decode.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Callable, Iterator, Sequence
from typing import TYPE_CHECKING, Any

import torch

from keyframe import layout
from keyframe.consistency import anchor_list, anchored_attention, share_noise
from keyframe.diffusion import Denoiser
from keyframe.errors import UserError
from keyframe.pixels import to_uint8
from keyframe.sampling import Callback, Generator, cfg_denoiser, randn
from keyframe.sampling import sample as run_sampler
from keyframe.sampling_options import check_sampling_options, with_defaults

if TYPE_CHECKING:
    from keyframe.module import KeyframeModule

MAX_SIZE_FACTOR = 4  # sampling sides up to 4x the training size (the cost grows as its square)
PLACE_ROUNDS = 3  # redraws at most per placed image (the best draw is kept)

Draw = Callable[..., torch.Tensor]  # draw(noise, index=None) -> latents


def sampling_defaults(model: torch.nn.Module) -> dict[str, Any]:
    """A trained model's own steps, guidance and sampler: its sample_* hyperparameters (its
    config.json), the one default of each (KeyframeModule and InterpolateModule alike)."""
    hp = model.hparams
    return {"steps": hp.sample_steps, "guidance": hp.sample_guidance, "sampler": hp.sample_sampler}


def image_generators(seed: int, count: int) -> list[torch.Generator]:
    """One CPU generator per image, seeded seed, seed + 1, ...: image i depends only on seed + i,
    so one storyboard panel can be re-rolled alone and the noise is the same on every device."""
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < 2**63 - count:
        raise UserError(f"seed: expected an integer from 0 to 2**63 - 1, got {seed!r}")
    return [torch.Generator().manual_seed(seed + i) for i in range(count)]


def latent_size(model: KeyframeModule, size: int | Sequence[int] | None = None) -> tuple[int, int]:
    """Latent (h, w) for an image size (int or (h, w); default image_size); a UserError
    unless both sides are positive multiples of `size_multiple`."""
    trained = model.hparams.image_size
    size = trained if size is None else size
    h, w = (size, size) if isinstance(size, int) else tuple(size)
    m = model.size_multiple
    if min(h, w) < 1 or h % m or w % m:
        raise UserError(f"size: {h}x{w} must be positive multiples of {m} for this model")
    largest = MAX_SIZE_FACTOR * trained
    if max(h, w) > largest:
        raise UserError(
            f"size: {h}x{w} is more than {MAX_SIZE_FACTOR}x the {trained} px "
            f"this model was trained at (at most {largest} px a side)"
        )
    return h // model.autoencoder.factor, w // model.autoencoder.factor


@torch.no_grad()
def sample(
    model: KeyframeModule,
    prompts: str | Sequence[str],
    negative_prompts: str | Sequence[str] | None = None,
    steps: int | None = None,
    guidance: float | None = None,
    sampler: str | None = None,
    seed: int | None = None,
    generator: Generator = None,
    size: int | Sequence[int] | None = None,
    callback: Callback | None = None,
    anchor: int | Sequence[int] | None = None,
    noise_share: float = 0.0,
    place: bool | None = None,
) -> torch.Tensor:
    """Images for prompts, float `b c h w` in [-1, 1] on the CPU, with the EMA weights.

    Guidance's uncond prompt is the negative prompt ("" if none). Image i uses seed + i; a
    `generator` (one, or one per image) replaces the seed; with neither, the global RNG is used.
    Steps, guidance, sampler (None: `sampling_defaults`) and `place` (`place_subjects`; off
    when anchored; None: sample_place). `anchor` (an index, or one per image; not with `place`):
    training-free consistency (`keyframe.consistency`) with `noise_share` of the anchor's noise;
    anchors come out as they would alone.
    """
    # 1. Check the inputs and fill in the defaults.
    check_sampling_options(steps, guidance, sampler)
    hp = model.hparams
    prompts, negatives = _prompts_and_negatives(prompts, negative_prompts)
    n = len(prompts)
    chosen = with_defaults(
        sampling_defaults(model), steps=steps, guidance=guidance, sampler=sampler
    )
    steps, guidance, sampler = chosen["steps"], chosen["guidance"], chosen["sampler"]
    shape = (n, model.latent_channels, *latent_size(model, size))
    if generator is None and seed is not None:
        generator = image_generators(seed, n)
    anchors, place = _anchors_and_place(n, anchor, noise_share, place, bool(hp.sample_place))
    solve = functools.partial(
        run_sampler, steps=steps, sampler=sampler, callback=callback, device=model.device
    )
    with eval_mode(model):
        # 2. Encode prompts and negatives in one batch; 3. the starting noise (placement moves it).
        cond, uncond = _encode_prompts(model, prompts, negatives)
        denoiser = model.sampling_denoiser()
        start, anchoring = _start_noise(model, denoiser, shape, generator, anchors, noise_share)
        start = randn(start, generator, model.device) if place else start
        # 4. Denoise (placed images are redrawn until their subjects sit in their cells), 5. decode.
        draw = _drawer(denoiser, cond, uncond, guidance, generator, solve, anchoring)
        latents = draw(start)
        if place:
            latents = place_subjects(model, draw, start, latents, prompts, generator)
        images = model.autoencoder.decode(latents)
    return images.float().clamp(-1, 1).cpu()


@contextlib.contextmanager
def eval_mode(model: torch.nn.Module) -> Iterator[None]:
    """`model` in eval mode inside the block, back in the mode it was in after it."""
    was_training = model.training
    model.eval()
    try:
        yield
    finally:
        model.train(was_training)


def _prompt_list(prompts: str | Sequence[str], name: str) -> list[str]:
    """One prompt or a sequence of them as a list; a UserError names an entry that is not text."""
    prompts = [prompts] if isinstance(prompts, str) else list(prompts)
    for i, prompt in enumerate(prompts):
        if not isinstance(prompt, str):
            raise UserError(f"{name} {i}: expected text, got {type(prompt).__name__}")
    return prompts


def _prompts_and_negatives(
    prompts: str | Sequence[str], negative_prompts: str | Sequence[str] | None
) -> tuple[list[str], list[str]]:
    """The prompts (at least one) and one negative prompt per prompt ("" for none)."""
    prompts = _prompt_list(prompts, "prompt")
    if not prompts:
        raise UserError("prompts: expected at least one prompt")
    n = len(prompts)
    if negative_prompts is None or isinstance(negative_prompts, str):
        return prompts, [negative_prompts or ""] * n
    negatives = _prompt_list(negative_prompts, "negative prompt")
    if len(negatives) != n:
        raise UserError(f"negative prompts: expected {n} (one per prompt), got {len(negatives)}")
    return prompts, negatives


def _anchors_and_place(
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


def _encode_prompts(
    model: KeyframeModule, prompts: list[str], negatives: list[str]
) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """(cond, uncond) U-Net conditioning from the EMA text tower, encoded in one batch."""
    n = len(prompts)
    both = model.encode_text(negatives + prompts, ema=True)
    return {k: v[n:] for k, v in both.items()}, {k: v[:n] for k, v in both.items()}


def _start_noise(
    model: KeyframeModule,
    denoiser: Denoiser,
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
    return noise, anchored_attention(denoiser, anchors)


def _drawer(
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


def place_subjects(
    model: KeyframeModule,
    draw: Draw,
    noise: torch.Tensor,
    latents: torch.Tensor,
    prompts: Sequence[str],
    generator: Generator = None,
) -> torch.Tensor:
    """`latents` drawn from `noise`, redrawn where a prompt's placed subjects ("a red circle at
    the top left") are outside their cell of a 3x3 grid (`keyframe.layout`) or drawn twice, from
    noise with their patches moved (or drawn afresh), up to PLACE_ROUNDS times; each sample keeps
    its best round. `generator`: fresh noise for removed copies."""
    plans = [layout.prompt_subjects(p) for p in prompts]
    todo = [i for i, subjects in enumerate(plans) if subjects]
    if not todo:
        return latents
    best = latents.clone()
    score = dict.fromkeys(todo, float("inf"))
    current = latents[todo]  # the latents of the samples in `todo`, in its order
    for round_ in range(PLACE_ROUNDS + 1):
        images = to_uint8(model.autoencoder.decode(current))
        redo = []
        for row, (image, i) in enumerate(zip(images, todo, strict=True)):
            fit = layout.fit_subjects(plans[i], layout.subject_regions(image))
            if fit.score < score[i]:
                score[i] = fit.score
                best[i] = current[row]
            if fit.score > 0 and round_ < PLACE_ROUNDS:
                own = generator[i] if isinstance(generator, Sequence) else generator
                moved = layout.move_subjects(noise[i].cpu(), fit, own)
                noise[i] = moved.to(noise)
                redo.append(i)
        if not redo:
            break
        todo, current = redo, draw(noise[redo], redo)
    return best


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
