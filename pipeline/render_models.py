"""The in-between models `animatic render` can call, each as a TweenFn: model-free previews
(``crossfade``, ``flow``), a general interpolator, or a trained shapes-world model.

A TweenFn takes uint8 keys (k, h, w, 3), their frame numbers, the window's length and a seed,
and returns every frame of the window, uint8 (num_frames, h, w, 3). One that accepts
``prompt=`` and/or ``fps=`` keywords gets the panel's prompt and the film's frame rate;
``model_id`` names it in segment hashes and sidecars.
"""

from __future__ import annotations

import inspect
import sys
from collections.abc import Callable, Sequence

import numpy as np

from keyframe.errors import UserError
from pipeline import io
from pipeline.devices import resolve_device
from pipeline.storyboard_models import model_name

TweenFn = Callable[..., np.ndarray]

BASELINES = ("crossfade", "flow")


def _baseline(name: str) -> TweenFn:
    """A model-free preview: ``crossfade``, or ``flow``, the flow in-betweens along parabolic
    paths that the shipped interpolator starts from (eval's `flow-paths`: a fraction of plain
    optical flow's double images)."""
    from pipeline import baselines

    tween = baselines.crossfade if name == "crossfade" else baselines.flow_paths

    def run(keys: np.ndarray, positions: list[int], num_frames: int, seed: int) -> np.ndarray:
        return tween(keys, positions, num_frames)

    run.model_id = "flow-paths" if name == "flow" else name
    return run


def pretrained_tween(model, name: str) -> TweenFn:
    """A trained interpolation model (an InterpolatePipeline loaded from `name`) as a TweenFn."""
    import torch

    from interpolate.inbetween import interpolate

    reads_text = model.config.text_conditioning

    def run(keys, positions, num_frames, seed, prompt=None, fps=None) -> np.ndarray:
        pixels = torch.stack([torch.from_numpy(io.from_uint8_rgb(key)) for key in keys])
        prompt = prompt if reads_text else None
        video = interpolate(model, pixels, positions, num_frames, seed=seed, prompt=prompt, fps=fps)
        return np.stack([io.to_uint8_rgb(video[:, f]) for f in range(video.shape[1])])

    run.model_id = model_name(name)
    return run


def general_tween(pipe, name: str) -> TweenFn:
    """A general interpolator (loaded from `name`) as a TweenFn: frames at the panels' own size."""
    if not pipe.trained:
        print(f"animatic render: note: {name}: no trained motion network in this model; motion "
              "is its flow init (DIS flow between the keys)", file=sys.stderr)  # fmt: skip

    def run(keys, positions, num_frames, seed) -> np.ndarray:
        floats = [k.astype(np.float32) / 255 for k in keys]
        frames = pipe(floats, positions, num_frames, seed=seed)
        return np.stack([np.clip(f * 255 + 0.5, 0, 255).astype(np.uint8) for f in frames])

    run.model_id = model_name(name)
    return run


def load_tween_model(name: str, device: str | None = None) -> TweenFn:
    """A TweenFn by name: a baseline (``crossfade``, ``flow``), or a model keyframe.hub loads (a
    general interpolator or a shapes-world interpolation model; name, folder or .ckpt)."""
    import interpolate  # noqa: F401  (registers the interpolate and general kinds)
    from keyframe import hub

    if name in BASELINES:
        return _baseline(name)
    try:
        model = hub.from_pretrained(name, ("general", "interpolate"), resolve_device(device))
    except UserError as err:
        hint = "for a preview use --tween-model crossfade or flow, or --animatic"
        raise UserError(f"interpolation {err}; {hint}") from None
    if hub.kind_of(model) == "general":
        return general_tween(model, name)
    return pretrained_tween(model, name)


def accepted_keywords(fn: Callable, names: Sequence[str]) -> set[str]:
    """Which of the keyword arguments ``names`` the callable takes."""
    try:
        parameters = inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return set()
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values()):
        return set(names)
    return {name for name in names if name in parameters}
