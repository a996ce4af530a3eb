"""`KeyframePipeline`: prompts in, images out, from a KeyframeModel's sampling weights.

    pipe = KeyframePipeline.from_pretrained("shapes")
    images = pipe(["a big red circle on a white background"], seed=0)   # b c h w in [-1, 1]

A call runs in numbered steps (like diffusers' pipelines): 1. check the inputs and fill in the
defaults (the model config's `sample_*`, the one default of each); 2. encode prompts and negative
prompts in one batch; 3. draw the starting noise (shared with an anchor for consistency);
4. denoise with classifier-free guidance, then hand the draw to the model's placement plug-in
when it has one (keyframe.placement: shapes models only); 5. decode. The helpers are
keyframe.inference's.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Sequence
from typing import Any

import torch

from keyframe import hub
from keyframe.errors import UserError
from keyframe.inference import (
    anchors_and_place,
    drawer,
    encode_prompts,
    eval_mode,
    image_generators,
    prompts_and_negatives,
    start_noise,
)
from keyframe.model import KeyframeModel
from keyframe.placement import Placement
from keyframe.sampling import Callback, Generator, randn
from keyframe.sampling import sample as run_sampler
from keyframe.sampling_options import check_sampling_options, sampling_defaults, with_defaults

NO_PLACEMENT = (
    "place: this model has no placement plug-in (the shapes models' `sample_place`); "
    "its subjects are not placed by position words"
)


class StagePipeline:
    """What both diffusion stages' pipelines share: a stage model (used as it is: a trainer's
    EMA weights are shared, not copied), loading and saving through keyframe.hub as their
    `KIND`, and the model's sampling defaults."""

    KIND = ""  # the keyframe.hub kind

    model: torch.nn.Module

    @classmethod
    def from_pretrained(cls, name_or_path: str | os.PathLike, device: str | torch.device = "cpu"):
        """A shipped model's name, a folder written by `save_pretrained`, or a training .ckpt;
        frozen, in eval mode, with the plug-ins its config asks for."""
        return hub.from_pretrained(name_or_path, cls.KIND, device)

    def save_pretrained(self, folder: str | os.PathLike, **options: Any):
        """config.json + model.safetensors (options: the kind's saver's)."""
        return hub.save_pretrained(self, folder, **options)

    @property
    def config(self):
        return self.model.config

    @property
    def device(self) -> torch.device:
        return self.model.device

    def to(self, device: str | torch.device):
        self.model.to(device)
        return self

    def sampling_defaults(self) -> dict[str, Any]:
        """The model's own steps, guidance and sampler (its config's sample_*)."""
        return sampling_defaults(self.config)


class KeyframePipeline(StagePipeline):
    """A KeyframeModel, its plug-ins and the sampling steps. `placement`: keyframe.placement's
    `place_subjects` or None (then `place=True` is an error)."""

    KIND = "keyframe"

    def __init__(self, model: KeyframeModel, placement: Placement | None = None):
        self.model = model
        self.placement = placement

    @property
    def places_by_default(self) -> bool:
        """Whether subjects are placed by default: the model's sample_place, with the plug-in."""
        return bool(self.config.sample_place) and self.placement is not None

    def latent_size(self, size: int | Sequence[int] | None = None) -> tuple[int, int]:
        """See KeyframeModel.latent_size: a bad size fails here, before any sampling."""
        return self.model.latent_size(size)

    @torch.no_grad()
    def __call__(
        self,
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
        """Images for prompts, float `b c h w` in [-1, 1] on the CPU.

        Guidance's uncond prompt is the negative prompt ("" if none). Image i uses seed + i; a
        `generator` (one, or one per image) replaces the seed; with neither, the global RNG is
        used. Steps, guidance, sampler (None: the model's) and `place` (off when anchored; None:
        sample_place). `anchor` (an index, or one per image; not with `place`): training-free
        consistency (keyframe.consistency) with `noise_share` of the anchor's noise; anchors
        come out as they would alone."""
        model = self.model
        # 1. Check the inputs and fill in the defaults.
        check_sampling_options(steps, guidance, sampler)
        prompts, negatives = prompts_and_negatives(prompts, negative_prompts)
        n = len(prompts)
        chosen = with_defaults(
            self.sampling_defaults(), steps=steps, guidance=guidance, sampler=sampler
        )
        shape = (n, model.latent_channels, *model.latent_size(size))
        if generator is None and seed is not None:
            generator = image_generators(seed, n)
        anchors, place = anchors_and_place(n, anchor, noise_share, place, self.places_by_default)
        if place and self.placement is None:
            raise UserError(NO_PLACEMENT)
        solve = functools.partial(
            run_sampler, steps=chosen["steps"], sampler=chosen["sampler"], callback=callback,
            device=model.device,
        )  # fmt: skip
        with eval_mode(model):
            # 2. Encode prompts and negatives in one batch.
            cond, uncond = encode_prompts(model, prompts, negatives)
            # 3. The starting noise (placement moves it, so it is drawn here).
            start, anchoring = start_noise(model, shape, generator, anchors, noise_share)
            start = randn(start, generator, model.device) if place else start
            # 4. Denoise; placed images are redrawn until their subjects sit in their cells.
            draw = drawer(
                model.denoiser, cond, uncond, chosen["guidance"], generator, solve, anchoring
            )
            latents = draw(start)
            if place:
                latents = self.placement(model, draw, start, latents, prompts, generator)
            # 5. Decode.
            images = model.autoencoder.decode(latents)
        return images.float().clamp(-1, 1).cpu()
