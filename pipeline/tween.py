"""`animatic tween KEYS --out OUT`: keys in, the full frame sequence out (and `tween()` for Python).

Keys are files, a numbered pattern (`shot_####.png`), a folder, or an exposure sheet
(`--xsheet`); numbered keys are timed by their frame numbers (pipeline.sequences). Keys keep
their depth and alpha (pipeline.media's frames contract): the model-free in-betweens (`--model
flow` or `crossfade`) work at the keys' own size, depth and channels; trained models work in
8-bit RGB, each key fitted into the model's square frame (letterboxed by default, padding by
repeating the edge pixels; or centre-cropped with `--fit crop`) and generated frames cut back
out and resized to the keys' size. The key frames of the output are the keys' own pixels (their
own bytes in a sequence of their format). OUT is a numbered pattern, a folder, or a .mov
(ProRes) / .mp4 / .gif (pipeline.tween_output); a JSON sidecar records how to reproduce it.
"""

from __future__ import annotations

import argparse
import functools
import itertools
import os
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from interpolate.flow import INIT_KINDS
from interpolate.general.names import is_general
from keyframe.errors import UserError
from pipeline import io, locks, media, safety, sequences
from pipeline.keys import key_files, read_keys
from pipeline.sequences import Timing
from pipeline.tween_output import check_target, conversion_note, output_target, write_output

DEFAULT_MODEL = "general"  # any keys; "shapes" by name for the 64 px shapes world
MODEL_FREE = ("flow", "crossfade")  # pipeline.modelfree (imported when used: it needs torch)
DEFAULT_BETWEEN = sequences.DEFAULT_BETWEEN  # in-betweens per gap without other timing
FITS = ("letterbox", "crop")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "keys",
        nargs="*",
        metavar="KEY",
        help="key images in order, a numbered pattern (shot_####.png), or one folder of them",
    )
    parser.add_argument(
        "--out",
        required=True,
        metavar="OUT",
        help="numbered frames (out/shot_####.png or .exr), a folder, or a .mov / .mp4 / .gif",
    )
    timing = parser.add_mutually_exclusive_group()
    timing.add_argument(
        "--between",
        type=int,
        metavar="N",
        help=f"frames generated between neighbouring keys (default {DEFAULT_BETWEEN} for "
        "unnumbered keys); with one key, frames generated after it",
    )
    timing.add_argument(
        "--timing",
        metavar="F0,F1,...",
        help="frame number of each key, strictly increasing (with --loop, one more: where the "
        "loop closes); overrides the keys' own numbers",
    )
    timing.add_argument(
        "--xsheet",
        metavar="SHEET.csv",
        help="exposure sheet: CSV with header frame,key,hold (keys relative to the sheet)",
    )
    parser.add_argument(
        "--model",
        default=DEFAULT_MODEL,
        metavar="PATH_OR_NAME",
        help=f"interpolation model (default: {DEFAULT_MODEL}, for any keys at their own size, "
        "depth and alpha): a shipped name ('shapes' for the 64 px shapes world), a folder from "
        "save_pretrained, a training .ckpt, or model-free 'flow' / 'crossfade'",
    )
    parser.add_argument("--steps", type=int, metavar="S", help="sampling steps (model default)")
    parser.add_argument("--seed", type=int, default=0, metavar="K", help="random seed (0)")
    parser.add_argument("--fps", type=float, default=24.0, help="frame rate of the output (24)")
    parser.add_argument("--prompt", metavar="TEXT", help="describe the motion (text models)")
    parser.add_argument("--guidance", type=float, metavar="G", help="prompt guidance scale")
    parser.add_argument("--sampler", metavar="NAME", help="sampler (model default)")
    parser.add_argument(
        "--init",
        choices=INIT_KINDS,
        help="where sampling starts: noise (the model alone) or flow (optical-flow in-betweens "
        "refined by the model); model default",
    )
    parser.add_argument(
        "--init-sigma",
        type=float,
        metavar="S",
        help="noise level flow in-betweens are refined from: higher lets the model change more "
        "(model default)",
    )
    parser.add_argument(
        "--no-motion-prior",
        action="store_true",
        help="flow init: ignore the model's learned motion prior (paths are then parabolas "
        "through the keys; use it for keys whose motion is unlike the model's training clips)",
    )
    parser.add_argument(
        "--loop", action="store_true", help="return to the first key at the end (a seamless loop)"
    )
    parser.add_argument(
        "--fit",
        choices=FITS,
        default="letterbox",
        help="fit keys to the model's square frame: letterbox (whole picture, output at the "
        "keys' size) or crop (centre square, output square)",
    )
    parser.add_argument("--device", default="auto", help="cpu, cuda, cuda:1, ... (auto)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing output")


# ---------------------------------------------------------------- fitting keys to the model


@dataclass(frozen=True)
class Fit:
    """Where the user's picture sits in the model's square frame, and the output's size."""

    size: int  # the model's frame side
    box: tuple[int, int, int, int]  # top, left, height, width of the picture in the model frame
    crop: tuple[int, int, int, int]  # top, left, height, width of the part of the key used
    out_size: tuple[int, int]  # output (height, width)


def make_fit(height: int, width: int, size: int, mode: str) -> Fit:
    if mode == "crop":
        side = min(height, width)
        crop = ((height - side) // 2, (width - side) // 2, side, side)
        return Fit(size, (0, 0, size, size), crop, (side, side))
    scale = size / max(height, width)
    new_h, new_w = max(1, round(height * scale)), max(1, round(width * scale))
    box = ((size - new_h) // 2, (size - new_w) // 2, new_h, new_w)
    return Fit(size, box, (0, 0, height, width), (height, width))


def _resize(image: np.ndarray, height: int, width: int) -> np.ndarray:
    if image.shape[:2] == (height, width):
        return image
    shrink = height * width < image.shape[0] * image.shape[1]
    return cv2.resize(
        image, (width, height), interpolation=cv2.INTER_AREA if shrink else cv2.INTER_CUBIC
    )


def to_model(image: np.ndarray, fit: Fit) -> np.ndarray:
    """A key as the model sees it: (size, size, 3) uint8; letterbox margins repeat the edges."""
    top, left, h, w = fit.crop
    picture = _resize(image[top : top + h, left : left + w], fit.box[2], fit.box[3])
    bt, bl, bh, bw = fit.box
    return cv2.copyMakeBorder(
        picture, bt, fit.size - bt - bh, bl, fit.size - bl - bw, cv2.BORDER_REPLICATE
    )


def from_model(frame: np.ndarray, fit: Fit) -> np.ndarray:
    """A generated (size, size, 3) frame back at the output size (margins cut away)."""
    top, left, h, w = fit.box
    return np.ascontiguousarray(_resize(frame[top : top + h, left : left + w], *fit.out_size))


def key_output(image: np.ndarray, fit: Fit) -> np.ndarray:
    """A key's own pixels as they appear in the output."""
    top, left, h, w = fit.crop
    return np.ascontiguousarray(image[top : top + h, left : left + w])


# ---------------------------------------------------------------- in-betweens


def _load_model(name: str, device: str):
    from interpolate.module import InterpolateModule

    return InterpolateModule.from_pretrained(name, device=device)


def _frames(stream: Iterator, fit: Fit, keys_out: dict[int, np.ndarray], count: int):
    """Model frames -> output frames: key positions get the key pixels, the rest are resized."""
    for index, frame in enumerate(itertools.islice(stream, count)):
        if index in keys_out:
            yield media.from_rgb8(keys_out[index])
        else:
            yield media.from_rgb8(from_model(io.to_uint8_rgb(frame.numpy()), fit))


def _model_frames(pixels, depth, timing: Timing, options: dict):
    """The trained model's frames (8-bit RGB), the keys as the output shows them (cropped with
    --fit crop, else None), and what the sidecar records of the run."""
    import torch
    from tqdm import tqdm

    from interpolate.inbetween import interpolate_frames, plan_windows
    from pipeline.devices import resolve_device

    if depth != "8-bit" or pixels[0].shape[2] != 3:
        raise UserError(
            f"model {options['model']} works in 8-bit RGB, and these keys are "
            f"{media.describe(depth, pixels[0].shape[2])}; use --model flow or crossfade "
            "(they keep alpha and depth)"
        )
    keys = [media.quantize(pixels[k], "8-bit") for k, _ in timing.slots]
    positions, num_frames = timing.positions(), timing.length
    model = _load_model(options["model"], resolve_device(options["device"]))
    hp = model.hparams
    fit = make_fit(*keys[0].shape[:2], hp.image_size, options["fit"])
    model_keys = torch.stack([torch.from_numpy(io.from_uint8_rgb(to_model(k, fit))) for k in keys])
    keys_out = {p: key_output(k, fit) for p, k in zip(positions, keys, strict=True)}
    windows = plan_windows(positions, num_frames, hp.num_frames, hp.context_frames)
    pick = {name: options[name] if options[name] is not None else hp[f"sample_{name}"]
            for name in ("steps", "sampler", "guidance", "init", "init_sigma")}  # fmt: skip
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
    uses_prior = pick["init"] == "flow" and options["motion_prior"] and model.motion_prior
    record = {
        **pick,
        "init_sigma": pick["init_sigma"] if pick["init"] == "flow" else None,
        "motion_prior": bool(uses_prior),
        "model_config": dict(hp),
        "windows": len(windows),
        "size": {"width": fit.out_size[1], "height": fit.out_size[0]},
    }
    return _closing(_frames(stream, fit, keys_out, timing.count), bar), cropped, record


def _general_frames(pixels, depth: str, timing: Timing, options: dict, say):
    """The general interpolator's frames at the keys' own size, depth and channels (motion found
    on 8-bit stand-ins at its working resolution), and what the sidecar records of them."""
    from tqdm import tqdm

    from interpolate.general.pipeline import GeneralInterpolator, working_shape
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
    frames = pipe(list(slots), timing.positions(), timing.length, seed=options["seed"],
                  steps=options["steps"], guides=guides)  # fmt: skip
    steps = pipe.config.steps if options["steps"] is None else options["steps"]
    steps = steps if pipe.trained else 0
    info = {"size": {"width": width, "height": height}, "model_config": pipe.config.to_dict(),
            "steps": steps, "sampler": "dpmpp_2m",
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


# ---------------------------------------------------------------- the function and the command


def _check_options(fps, seed, guidance, steps, init_sigma=None, sampler=None) -> None:
    """Numeric options in range (NaN and 1e30 included) and a known sampler, before any work,
    whichever model runs (the general model uses neither init_sigma nor sampler)."""
    from interpolate.flow import check_init
    from keyframe.module import MAX_GUIDANCE, MAX_SAMPLE_STEPS
    from keyframe.sampling import check_sampler
    from pipeline.shotlist import MAX_FPS, MAX_SEED

    safety.check_number(fps, "--fps", 1e-3, MAX_FPS)
    safety.check_number(seed, "--seed", 0, MAX_SEED, integer=True)
    if guidance is not None:
        safety.check_number(guidance, "--guidance", 0, MAX_GUIDANCE)
    if steps is not None:
        safety.check_number(steps, "--steps", 1, MAX_SAMPLE_STEPS, integer=True)
    if init_sigma is not None:
        check_init("flow", init_sigma)  # the sigma flow in-betweens are noised to
    if sampler is not None:
        check_sampler(sampler)


def _exclusive(function):
    """Run `tween` holding the lock of its ``out`` (when it writes one), after removing the temp
    files a killed run of that output left (pipeline.locks, pipeline.safety)."""

    @functools.wraps(function)
    def locked(keys=(), out=None, **kwargs):
        if out is None:
            return function(keys, out, **kwargs)
        target = Path(out)
        with locks.exclusive(target, what=f"tween --out {out}"):
            safety.clean_temporaries(target.parent, (target.name, target.stem))
            return function(keys, out, **kwargs)

    return locked


@dataclass(frozen=True)
class TweenResult:
    """What `tween` made: the frames (float32 (h, w, C), pipeline.media's contract; None when
    not kept), each frame's number, the keys' depth, the files written and the sidecar record."""

    frames: list[np.ndarray] | None
    numbers: list[int]
    depth: str
    files: list[Path]
    record: dict


@_exclusive
def tween(
    keys=(),
    out: str | os.PathLike | None = None,
    *,
    model: str = DEFAULT_MODEL,
    between: int | None = None,
    timing: Sequence[int] | str | None = None,
    xsheet: str | os.PathLike | None = None,
    loop: bool = False,
    fit: str = "letterbox",
    fps: float = 24.0,
    seed: int = 0,
    steps: int | None = None,
    sampler: str | None = None,
    guidance: float | None = None,
    prompt: str | None = None,
    init: str | None = None,
    init_sigma: float | None = None,
    motion_prior: bool = True,
    device: str = "auto",
    overwrite: bool = False,
    keep_frames: bool = True,
    verbose: bool = True,
) -> TweenResult:
    """Fill in the frames between keys: files, a pattern, a folder or arrays (``(h, w, 3|4)``
    uint8/uint16, or float premultiplied), or an exposure sheet. Writes to ``out`` when given
    (see the module docstring) and returns the frames (``keep_frames``) as float32 (h, w, C).

        result = tween(["shot_0101.png", "shot_0113.png"], "out/shot_####.png", model="flow")
    """

    def say(message: str) -> None:
        if verbose:
            print(f"animatic tween: note: {message}", file=sys.stderr)

    _check_options(fps, seed, guidance, steps, init_sigma, sampler)
    if fit not in FITS:
        raise UserError(f"--fit {fit}: expected one of {', '.join(FITS)}")
    timing = sequences.parse_timing(timing) if isinstance(timing, str) else timing
    files, arrays, sheet = key_files(keys, xsheet)
    plan = sequences.plan_timing(
        files, between, timing, loop, holds=sheet and sheet[1], sheet_frames=sheet and sheet[0],
        say=say,
    )  # fmt: skip
    safety.check_frame_count(plan.length, "--between/--timing")
    pixels, depth, copyable = read_keys(files, arrays)
    target = None
    if out is not None:
        target = output_target(out, files, plan, exr=files[0].suffix.lower() == ".exr")
        check_target(target, plan, files, overwrite)
        note = conversion_note(target, depth, pixels[0].shape[2])
        if note:
            say(note)
    options = {"model": model, "device": device, "fit": fit, "seed": seed, "steps": steps,
               "sampler": sampler, "guidance": guidance, "init": init, "init_sigma": init_sigma,
               "prompt": prompt, "fps": fps, "motion_prior": motion_prior}  # fmt: skip
    if model in MODEL_FREE or is_general(model):
        if fit != "letterbox":
            say(f"--fit {fit} is for shapes-world models; {model} works at the keys' own size")
        shapes_only = ("sampler", "guidance", "init", "init_sigma", "prompt")
        unused = [f"--{k.replace('_', '-')}" for k in shapes_only if options[k] is not None]
        if unused:
            say(f"{' '.join(unused)}: not used by {model} (only by shapes-world models)")
        if model in MODEL_FREE:
            stream, info = _model_free_frames(pixels, depth, plan, model)
        else:
            stream, info = _general_frames(pixels, depth, plan, options, say)
    else:
        stream, cropped, info = _model_frames(pixels, depth, plan, options)
        if cropped is not None:
            pixels, copyable = cropped, [False] * len(cropped)
    kept: list[np.ndarray] | None = [] if keep_frames else None
    if kept is not None:
        stream = _keeping(stream, kept)
    written = []
    if target is not None:
        written = write_output(target, stream, plan, files, pixels, copyable, depth, fps, overwrite)
    else:
        for _ in stream:
            pass
    if kept is not None:
        held = plan.held()
        kept = [pixels[held[i]] if i in held else f for i, f in enumerate(kept)]
    record = _record(files, plan, options, info, (depth, pixels[0].shape[2]), between, written)
    record["loop"] = loop
    if target is not None:
        io.write_sidecar(target.record_path, record)
    return TweenResult(kept, plan.numbers(), depth, written, record)


def _keeping(frames: Iterator[np.ndarray], kept: list) -> Iterator[np.ndarray]:
    for frame in frames:
        kept.append(frame)
        yield frame


def _record(files, plan: Timing, options: dict, info: dict, kind, between, written) -> dict:
    """The sidecar: keys, timing, model and settings, outputs."""
    depth, channels = kind
    model = options["model"]
    free = model in MODEL_FREE
    return {
        "command": "tween",
        "keys": [
            {"path": str(f.path.resolve()) if f.suffix else str(f.path), "frame": frame}
            for f, frame in zip(files, plan.keys, strict=False)
        ],
        "frames": plan.count,
        "first_frame": plan.first,
        "key_frames": list(plan.keys),
        "timing_source": plan.source,
        "between": between,
        "timing": list(plan.keys) if plan.source == "timing" else None,
        "depth": depth,
        "channels": channels,
        "fit": options["fit"],
        "model": str(Path(model).resolve()) if Path(model).exists() and not free else model,
        **{k: None for k in ("steps", "sampler", "guidance", "init", "init_sigma")},
        "motion_prior": False,
        "windows": None,
        **info,
        "seed": options["seed"],
        "prompt": options["prompt"],
        "fps": options["fps"],
        "outputs": [str(p) for p in written],
    }


def run(args: argparse.Namespace) -> int:
    result = tween(
        args.keys, args.out, model=args.model, between=args.between, timing=args.timing,
        xsheet=args.xsheet, loop=args.loop, fit=args.fit, fps=args.fps, seed=args.seed,
        steps=args.steps, sampler=args.sampler, guidance=args.guidance, prompt=args.prompt,
        init=args.init, init_sigma=args.init_sigma, motion_prior=not args.no_motion_prior,
        device=args.device, overwrite=args.overwrite, keep_frames=False,
    )  # fmt: skip
    record = result.record
    print(f"tween: {record['frames']} frames ({len(record['keys'])} keys, "
          f"{media.describe(result.depth, record['channels'])}) -> {args.out}")  # fmt: skip
    return 0
