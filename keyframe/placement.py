"""Subject placement, the shapes-world keyframe models' plug-in: images whose subjects are not in
the cells their position words name ("a red circle at the top left") are redrawn from noise with
the subjects' patches moved there (keyframe.layout finds the flat-colour subjects and the cells).

A KeyframePipeline gets it from its model: a model whose config says `sample_place` (the shipped
shapes models) is handed `place_subjects`, which then runs by default; other models have none,
and asking them to place is an error, not a silent no-op (their subjects are not flat blobs).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

import torch

from keyframe import layout
from keyframe.inference import Draw
from keyframe.pixels import to_uint8
from keyframe.sampling import Generator

if TYPE_CHECKING:
    from keyframe.model import KeyframeModel

PLACE_ROUNDS = 3  # redraws at most per placed image (the best draw is kept)
Placement = Callable[..., torch.Tensor]  # place_subjects' signature


def placement_for(config: object) -> Placement | None:
    """The placement plug-in a keyframe model's config asks for (`sample_place`), else None."""
    return place_subjects if getattr(config, "sample_place", False) else None


def place_subjects(
    model: KeyframeModel,
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
