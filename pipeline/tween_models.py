"""The in-betweens of `animatic tween`, as a stream of frames (pipeline.media's contract) plus
what the sidecar records of how they were made: model-free (``flow``, ``crossfade``: the keys'
own size, depth and channels), the general interpolator (likewise), or a trained shapes-world
model (8-bit RGB in its square frame, pipeline.tween_fit). Models load only when used.
"""

from __future__ import annotations

import itertools
import sys
from collections.abc import Callable, Iterator

import numpy as np

from interpolate.general.names import is_general
from keyframe.errors import UserError
from pipeline import io, media
from pipeline.sequences import Timing
from pipeline.tween_fit import Fit, from_model, key_output, make_fit, to_model

MODEL_FREE = ("flow", "crossfade")  # pipeline.modelfree (imported when used: it needs torch)
SHAPES_ONLY = ("sampler", "guidance", "init", "init_sigma", "prompt")  # options only they use
TRAINED_OPTIONS = ("steps", "sampler", "guidance", "init", "init_sigma")  # None: the model's


def inbetweens(pixels, depth: str, timing: Timing, options: dict, say: Callable[[str], None]):
    """The chosen model's frames (a stream, made as they are written), what the sidecar records
    of them, and the keys as the output shows them (cropped with --fit crop, else None)."""
    model = options["model"]
    if model not in MODEL_FREE and not is_general(model):
        return _model_frames(pixels, depth, timing, options)
    fit = options["fit"]
    if fit != "letterbox":
        say(f"--fit {fit} is for shapes-world models; {model} works at the keys' own size")
    unused = [f"--{k.replace('_', '-')}" for k in SHAPES_ONLY if options[k] is not None]
    if unused:
        say(f"{' '.join(unused)}: not used by {model} (only by shapes-world models)")
    if model in MODEL_FREE:
        stream, info = _model_free_frames(pixels, depth, timing, model)
    else:
        stream, info = _general_frames(pixels, depth, timing, options, say)
    return stream, info, None


def _load_model(name: str, device: str):
    from interpolate.pipeline import InterpolatePipeline

    return InterpolatePipeline.from_pretrained(name, device=device)


def _frames(stream: Iterator, fit: Fit, keys_out: dict[int, np.ndarray], count: int):
    """Model frames -> output frames: key positions get the key pixels, the rest are resized."""
    for index, frame in enumerate(itertools.islice(stream, count)):
        if index in keys_out:
            yield media.from_rgb8(keys_out[index])
        else:
            yield media.from_rgb8(from_model(io.to_uint8_rgb(frame.numpy()), fit))


def _model_frames(pixels, depth, timing: Timing, options: dict):
    """The trained model's frames (8-bit RGB), what the sidecar records of the run, and the keys
    as the output shows them (cropped with --fit crop, else None)."""
    import torch
    from tqdm import tqdm

    from interpolate.inbetween import interpolate_frames, plan_windows
    from keyframe.sampling_options import with_defaults
    from pipeline.devices import resolve_device

    keys = _rgb8_keys(pixels, depth, timing, options["model"])
    positions, num_frames = timing.positions(), timing.length
    model = _load_model(options["model"], resolve_device(options["device"]))
    hp = model.config
    fit = make_fit(*keys[0].shape[:2], hp.image_size, options["fit"])
    model_keys = torch.stack([torch.from_numpy(io.from_uint8_rgb(to_model(k, fit))) for k in keys])
    keys_out = {p: key_output(k, fit) for p, k in zip(positions, keys, strict=True)}
    windows = plan_windows(positions, num_frames, hp.num_frames, hp.context_frames)
    defaults = {**model.sampling_defaults(), "init": hp.sample_init}
    defaults["init_sigma"] = hp.sample_init_sigma
    pick = with_defaults(defaults, **{name: options[name] for name in TRAINED_OPTIONS})
    bar = tqdm(total=len(windows), desc="windows", unit="window", disable=None, file=sys.stderr)

    def progress(info: dict) -> None:
        if info["i"] == info["steps"] - 1:
            bar.update()

    stream = interpolate_frames(
        model, model_keys, positions, num_frames, steps=pick["steps"], guidance=pick["guidance"],
        seed=options["seed"], sampler=pick["sampler"], prompt=options["prompt"],
        fps=options["fps"], callback=progress, init=pick["init"], init_sigma=pick["init_sigma"],
        motion=options["motion_prior"],
    )  # fmt: skip
    cropped = None
    if options["fit"] == "crop":
        cropped = [media.from_rgb8(key_output(media.quantize(p, "8-bit"), fit)) for p in pixels]
    record = _model_record(pick, options, model, len(windows), fit)
    return _closing(_frames(stream, fit, keys_out, timing.count), bar), record, cropped


def _rgb8_keys(pixels, depth: str, timing: Timing, name: str) -> list[np.ndarray]:
    """The keys in timing order as 8-bit RGB, refusing keys a trained model cannot take."""
    if depth != "8-bit" or pixels[0].shape[2] != 3:
        raise UserError(
            f"model {name} works in 8-bit RGB, and these keys are "
            f"{media.describe(depth, pixels[0].shape[2])}; use --model flow or crossfade "
            "(they keep alpha and depth)"
        )
    return [media.quantize(pixels[k], "8-bit") for k, _ in timing.slots]


def _model_record(pick: dict, options: dict, model, windows: int, fit: Fit) -> dict:
    """What the sidecar records of a trained model's run: the sampling settings it used."""
    uses_prior = pick["init"] == "flow" and options["motion_prior"] and model.motion_prior
    return {
        **pick,
        "init_sigma": pick["init_sigma"] if pick["init"] == "flow" else None,
        "motion_prior": bool(uses_prior),
        "model_config": model.config.to_dict(),
        "windows": windows,
        "size": {"width": fit.out_size[1], "height": fit.out_size[0]},
    }


def _general_frames(pixels, depth: str, timing: Timing, options: dict, say):
    """The general interpolator's frames at the keys' own size, depth and channels (motion found
    on 8-bit stand-ins at its working resolution), and what the sidecar records of them."""
    from tqdm import tqdm

    from interpolate.general.pipeline import GeneralInterpolator, working_shape
    from keyframe.sampling_options import with_defaults
    from pipeline.devices import resolve_device
    from pipeline.modelfree import flow_proxies

    pipe = GeneralInterpolator.from_pretrained(options["model"], resolve_device(options["device"]))
    slots = np.stack([pixels[k] for k, _ in timing.slots])
    height, width = slots.shape[1:3]
    work = working_shape(height, width, pipe.config)
    if work[0] < height or work[1] < width:  # not when it only rounds the size up
        say(f"motion is made at {work[1]}x{work[0]} (the model's working resolution); frames are "
            f"made at the keys' {width}x{height} from the keys' own pixels")  # fmt: skip
    if not pipe.trained:
        say(f"{options['model']}: no trained motion network in this model; motion is its flow "
            "init (DIS flow between the keys, carried to each in-between's time)")  # fmt: skip
    guides = list(flow_proxies(slots, depth))
    bar = tqdm(total=timing.count, desc="in-betweens", unit="frame", disable=None, file=sys.stderr)
    chosen = with_defaults(pipe.sampling_defaults(), steps=options["steps"], sampler=None)
    frames = pipe(list(slots), timing.positions(), timing.length, seed=options["seed"],
                  steps=chosen["steps"], guides=guides)  # fmt: skip
    info = {"size": {"width": width, "height": height}, "model_config": pipe.config.to_dict(),
            "steps": chosen["steps"] if pipe.trained else 0, "sampler": chosen["sampler"],
            "working_size": {"width": work[1], "height": work[0]}}  # fmt: skip
    return _closing(_counted(itertools.islice(frames, timing.count), bar), bar), info


def _model_free_frames(pixels, depth: str, timing: Timing, kind: str):
    """Flow or crossfade in-betweens at the keys' size, depth and channels (pipeline.modelfree),
    and what the sidecar records of them."""
    from tqdm import tqdm

    from pipeline.modelfree import inbetweens

    slots = np.stack([pixels[k] for k, _ in timing.slots])
    frames = inbetweens(slots, timing.positions(), timing.length, kind, depth)
    height, width = pixels[0].shape[:2]
    info = {"size": {"width": width, "height": height}, "model_config": None}
    bar = tqdm(total=timing.count, desc=kind, unit="frame", disable=None, file=sys.stderr)
    return _closing(_counted(itertools.islice(frames, timing.count), bar), bar), info


def _counted(frames: Iterator[np.ndarray], bar) -> Iterator[np.ndarray]:
    for frame in frames:
        yield frame
        bar.update()


def _closing(frames: Iterator[np.ndarray], bar) -> Iterator[np.ndarray]:
    try:
        yield from frames
    finally:
        bar.close()
