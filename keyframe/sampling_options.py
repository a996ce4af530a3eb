"""Sampling options (steps, guidance, sampler): the one check of the values people give, and the
one place a value left out (None) becomes the model's own default.

Every entry point runs `check_sampling_options` first, before any model loads: the CLI commands
(with prefix "--"), shot lists (with the file and line in front), `tween()`, `storyboard()`,
`render()`, and the models' own sampling functions for direct callers. Defaults live in each
model's config only (`sampling_defaults` of the model's settings: KeyframePipeline,
InterpolateModule, DiffusersModel, GeneralInterpolator), filled in by `with_defaults`. No torch
here: shot lists import it.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from keyframe.errors import UserError

SAMPLER_NAMES = ("euler", "euler_ancestral", "heun", "dpmpp_2m")  # keyframe.sampling.SAMPLERS
MAX_SAMPLE_STEPS = 1000
MAX_GUIDANCE = 100.0  # scales in use are 1-20; far above, every image saturates (1e30: black)
EXPECTED = {  # what each option takes, as every message about it says
    "steps": f"a whole number from 1 to {MAX_SAMPLE_STEPS}",
    "guidance": f"a number from 0 to {MAX_GUIDANCE:g}",
    "sampler": f"one of {', '.join(SAMPLER_NAMES)}",
}


def _valid(name: str, value: object) -> bool:
    if name == "sampler":
        return value in SAMPLER_NAMES
    number = isinstance(value, (int, float)) and not isinstance(value, bool)
    if name == "steps":
        return number and isinstance(value, int) and 1 <= value <= MAX_SAMPLE_STEPS
    return number and math.isfinite(value) and 0 <= value <= MAX_GUIDANCE


def check_sampling_options(
    steps: object = None, guidance: object = None, sampler: object = None, prefix: str = ""
) -> None:
    """UserError "{prefix}steps: expected a whole number from 1 to 1000, got 0" for the first
    bad option; None (the model's default) passes."""
    for name, value in (("steps", steps), ("guidance", guidance), ("sampler", sampler)):
        if value is not None and not _valid(name, value):
            raise UserError(f"{prefix}{name}: expected {EXPECTED[name]}, got {value!r}")


def with_defaults(defaults: Mapping[str, Any], **options: Any) -> dict[str, Any]:
    """`options` with each None replaced by the model's own value from `defaults` (a model's
    `sampling_defaults`), in the order given."""
    return {name: defaults[name] if value is None else value for name, value in options.items()}


def sampling_defaults(settings: Any) -> dict[str, Any]:
    """A diffusion model's own steps, guidance and sampler: the `sample_*` attributes of its
    settings (a KeyframeConfig, an InterpolateModule's hparams), the one default of each."""
    return {
        "steps": settings.sample_steps,
        "guidance": settings.sample_guidance,
        "sampler": settings.sample_sampler,
    }
