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
The models' side is pipeline.tween_models (and pipeline.tween_fit for the square frame).
"""

from __future__ import annotations

import argparse
import functools
import os
import sys
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from interpolate.flow import INIT_KINDS
from keyframe.errors import UserError
from pipeline import io, locks, media, safety, sequences
from pipeline.keys import key_files, read_keys
from pipeline.sequences import KeyFile, Timing
from pipeline.tween_models import MODEL_FREE, inbetweens
from pipeline.tween_output import Target, check_target, conversion_note, output_target, write_output

DEFAULT_MODEL = "general"  # any keys; "shapes" by name for the 64 px shapes world
DEFAULT_BETWEEN = sequences.DEFAULT_BETWEEN  # in-betweens per gap without other timing
FITS = ("letterbox", "crop")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The `animatic tween` options, in the order --help lists them."""
    _add_keys_arguments(parser)
    _add_model_arguments(parser)
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


def _add_keys_arguments(parser: argparse.ArgumentParser) -> None:
    """The keys, the output, and the keys' timing (one way at most)."""
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


def _add_model_arguments(parser: argparse.ArgumentParser) -> None:
    """The model and its sampling settings."""
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


def _check_options(options: dict) -> None:
    """Numeric options in range (NaN and 1e30 included), a known sampler and fit, before any
    work, whichever model runs (the general model uses neither init_sigma nor sampler)."""
    from interpolate.flow import check_init
    from keyframe.sampling_options import check_sampling_options
    from pipeline.shotlist import MAX_FPS, MAX_SEED

    safety.check_number(options["fps"], "--fps", 1e-3, MAX_FPS)
    safety.check_number(options["seed"], "--seed", 0, MAX_SEED, integer=True)
    check_sampling_options(options["steps"], options["guidance"], options["sampler"], "--")
    if options["init_sigma"] is not None:
        check_init("flow", options["init_sigma"])  # the sigma flow in-betweens are noised to
    if options["fit"] not in FITS:
        raise UserError(f"--fit {options['fit']}: expected one of {', '.join(FITS)}")


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
    say = _notes(verbose)
    options = {"model": model, "device": device, "fit": fit, "seed": seed, "steps": steps,
               "sampler": sampler, "guidance": guidance, "init": init, "init_sigma": init_sigma,
               "prompt": prompt, "fps": fps, "motion_prior": motion_prior}  # fmt: skip
    # 1. check the options, before reading any key
    _check_options(options)
    # 2. read the keys and plan when each is shown
    files, plan, (pixels, depth, copyable) = _read(keys, xsheet, between, timing, loop, say)
    # 3. check where the frames go, before any work
    target = None if out is None else _target(out, files, plan, pixels, depth, overwrite, say)
    # 4. the model's in-betweens (a stream: they are made as step 5 writes them)
    stream, info, cropped = inbetweens(pixels, depth, plan, options, say)
    if cropped is not None:  # --fit crop: the output shows the keys' centre squares
        pixels, copyable = cropped, [False] * len(cropped)
    # 5. write the frames, keeping them unless asked not to
    kept: list[np.ndarray] | None = [] if keep_frames else None
    stream = stream if kept is None else _keeping(stream, kept)
    written = _write(target, stream, plan, files, pixels, copyable, depth, fps, overwrite)
    # 6. the sidecar: the keys, timing, model and settings, to make these frames again
    record = _record(files, plan, options, info, (depth, pixels[0].shape[2]), between, written)
    record["loop"] = loop
    if target is not None:
        io.write_sidecar(target.record_path, record)
    return TweenResult(_with_keys(kept, plan, pixels), plan.numbers(), depth, written, record)


def _notes(verbose: bool) -> Callable[[str], None]:
    """A function printing one note line (or nothing, unless ``verbose``)."""

    def say(message: str) -> None:
        if verbose:
            print(f"animatic tween: note: {message}", file=sys.stderr)

    return say


def _read(keys, xsheet, between, timing, loop: bool, say) -> tuple[list[KeyFile], Timing, tuple]:
    """The key files, their timing, and (pipeline.keys) their pixels, depth and which of them
    may be copied byte for byte."""
    timing = sequences.parse_timing(timing) if isinstance(timing, str) else timing
    files, arrays, sheet = key_files(keys, xsheet)
    plan = sequences.plan_timing(
        files, between, timing, loop, holds=sheet and sheet[1], sheet_frames=sheet and sheet[0],
        say=say,
    )  # fmt: skip
    safety.check_frame_count(plan.length, "--between/--timing")
    return files, plan, read_keys(files, arrays)


def _target(out, files, plan: Timing, pixels, depth: str, overwrite: bool, say) -> Target:
    """Where ``out`` puts the frames, checked before any work; says what it cannot keep."""
    target = output_target(out, files, plan, exr=files[0].suffix.lower() == ".exr")
    check_target(target, plan, files, overwrite)
    note = conversion_note(target, depth, pixels[0].shape[2])
    if note:
        say(note)
    return target


def _write(target, frames, plan, files, pixels, copyable, depth, fps, overwrite) -> list[Path]:
    """Write the frames to the target (pipeline.tween_output), or only make them."""
    if target is None:
        for _ in frames:
            pass
        return []
    return write_output(target, frames, plan, files, pixels, copyable, depth, fps, overwrite)


def _keeping(frames: Iterator[np.ndarray], kept: list) -> Iterator[np.ndarray]:
    for frame in frames:
        kept.append(frame)
        yield frame


def _with_keys(kept: list | None, plan: Timing, pixels) -> list[np.ndarray] | None:
    """The kept frames with each key's own pixels where it is shown."""
    if kept is None:
        return None
    held = plan.held()
    return [pixels[held[i]] if i in held else f for i, f in enumerate(kept)]


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
