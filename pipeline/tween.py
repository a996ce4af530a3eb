"""`animatic tween KEY... | KEY_DIR --out OUT`: keys in, the full frame sequence out.

Keys may have any size and aspect ratio: each is fitted into the model's square frame
(letterboxed by default, padding by repeating the edge pixels so the model sees no black bars; or
centre-cropped with `--fit crop`), and generated frames are cut back out and resized to the keys'
size. The key frames of the output are the key images' own pixels. OUT is a folder (PNG sequence
`OUT/OUT.0001.png`, ...), or an .mp4 / .gif file; a JSON sidecar (`OUT.json`, `film.mp4.json`)
records everything needed to reproduce it.
"""

from __future__ import annotations

import argparse
import functools
import itertools
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import torch

from interpolate.flow import INIT_KINDS
from keyframe.errors import UserError
from pipeline import io, locks, safety
from pipeline.devices import resolve_device

DEFAULT_MODEL = "shapes"
DEFAULT_BETWEEN = 7  # in-betweens per gap when neither --between nor --timing is given
FITS = ("letterbox", "crop")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "keys", nargs="+", metavar="KEY", help="key images in order, or one folder of them"
    )
    parser.add_argument(
        "--out", required=True, metavar="OUT", help="a folder (PNG sequence), or an .mp4 / .gif"
    )
    timing = parser.add_mutually_exclusive_group()
    timing.add_argument(
        "--between",
        type=int,
        metavar="N",
        help=f"frames generated between neighbouring keys (default {DEFAULT_BETWEEN}); with one "
        "key, frames generated after it",
    )
    timing.add_argument(
        "--timing",
        metavar="F0,F1,...",
        help="frame number of each key, strictly increasing (with --loop, one more: where the "
        "loop closes)",
    )
    parser.add_argument(
        "--model",
        default=DEFAULT_MODEL,
        metavar="PATH_OR_NAME",
        help="interpolation model: a folder from save_pretrained, a training .ckpt, or a shipped "
        f"model name (default: {DEFAULT_MODEL})",
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


# ---------------------------------------------------------------- timing


def parse_timing(text: str) -> list[int]:
    """'0,12,30' -> [0, 12, 30]."""
    try:
        return [int(part) for part in text.split(",")]
    except ValueError:
        raise UserError(
            f"--timing {text!r}: expected comma-separated frame numbers, e.g. 0,12,30"
        ) from None


def key_positions(
    count: int, between: int | None, timing: Sequence[int] | None, loop: bool
) -> tuple[list[int], int]:
    """Frame number of each key (with --loop, of the repeated first key too), and the length
    of the sequence: to the last key, or with one key and --between N, N frames after it."""
    slots = count + 1 if loop else count
    if timing is not None:
        if len(timing) != slots:
            extra = " (with --loop: one more, where the loop closes)" if loop else ""
            raise UserError(
                f"--timing has {len(timing)} frame numbers for {count} keys; expected "
                f"{slots}{extra}"
            )
        if timing[0] < 0:
            raise UserError(f"--timing {timing}: frame numbers must be >= 0")
        if any(b <= a for a, b in zip(timing, timing[1:], strict=False)):
            raise UserError(f"--timing {timing}: frame numbers must be strictly increasing")
        return list(timing), timing[-1] + 1
    if count == 1 and between is None and not loop:
        raise UserError("a single key needs --between N (how many frames to generate after it)")
    between = DEFAULT_BETWEEN if between is None else between
    if between < 0 or (between == 0 and slots == 1):
        raise UserError(f"--between {between}: expected a number of frames >= 1")
    if slots == 1:
        return [0], between + 1
    positions = [i * (between + 1) for i in range(slots)]
    return positions, positions[-1] + 1


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


# ---------------------------------------------------------------- the command


def _key_paths(items: Sequence[str]) -> list[Path]:
    if len(items) == 1 and Path(items[0]).is_dir():
        return io.list_images(items[0])
    for item in items:
        if Path(item).is_dir():
            raise UserError(f"{item}: is a folder; give key images, or one folder of them alone")
    return [Path(item) for item in items]


def _read_keys(paths: Sequence[Path]) -> list[np.ndarray]:
    """Read every key; keys of another size than the first are resized to it (with a warning)."""
    keys = [io.read_image(p) for p in paths]
    height, width = keys[0].shape[:2]
    for i, (path, key) in enumerate(zip(paths, keys, strict=True)):
        if key.shape[:2] != (height, width):
            print(
                f"animatic tween: warning: {path} is {key.shape[1]}x{key.shape[0]}, resized to "
                f"{width}x{height} (the first key's size)",
                file=sys.stderr,
            )
            keys[i] = _resize(key, height, width)
    return keys


def _output_kind(out: Path) -> str:
    suffix = out.suffix.lower()
    if suffix in (".mp4", ".gif"):
        return suffix[1:]
    if suffix and not out.is_dir():
        raise UserError(
            f"--out {out}: unsupported output '{out.suffix}'; expected a folder, .mp4 or .gif"
        )
    return "png"


def _load_model(name: str, device: str):
    from interpolate.module import InterpolateModule

    return InterpolateModule.from_pretrained(name, device=device)


def _frames(stream: Iterator[torch.Tensor], fit: Fit, keys_out: dict[int, np.ndarray], count: int):
    """Model frames -> output frames: key positions get the key pixels, the rest are resized."""
    for index, frame in enumerate(itertools.islice(stream, count)):
        if index in keys_out:
            yield keys_out[index]
        else:
            yield from_model(io.to_uint8_rgb(frame.numpy()), fit)


def _check_numbers(args: argparse.Namespace) -> None:
    """Numeric options in range (NaN and 1e30 included) before any work."""
    from keyframe.module import MAX_GUIDANCE, MAX_SAMPLE_STEPS
    from pipeline.shotlist import MAX_FPS, MAX_SEED

    safety.check_number(args.fps, "--fps", 1e-3, MAX_FPS)
    safety.check_number(args.seed, "--seed", 0, MAX_SEED, integer=True)
    if args.guidance is not None:
        safety.check_number(args.guidance, "--guidance", 0, MAX_GUIDANCE)
    if args.steps is not None:
        safety.check_number(args.steps, "--steps", 1, MAX_SAMPLE_STEPS, integer=True)


def _exclusive(function):
    """Run the command holding the lock of its --out, after removing the temp files a killed
    run of that output left (pipeline.locks, pipeline.safety)."""

    @functools.wraps(function)
    def locked(args: argparse.Namespace) -> int:
        out = Path(args.out)
        with locks.exclusive(out, what=f"tween --out {out}"):
            safety.clean_temporaries(out.parent, (out.name, out.stem))
            return function(args)

    return locked


@_exclusive
def run(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from interpolate.inbetween import interpolate_frames, plan_windows

    out = Path(args.out)
    kind = _output_kind(out)
    io.check_writable(out, args.overwrite, folder=kind == "png")
    _check_numbers(args)
    paths = _key_paths(args.keys)
    timing = parse_timing(args.timing) if args.timing is not None else None
    positions, num_frames = key_positions(len(paths), args.between, timing, args.loop)
    safety.check_frame_count(num_frames, "--between/--timing")
    keys = _read_keys(paths)
    if args.loop:
        keys.append(keys[0])
    shown = num_frames - 1 if args.loop else num_frames  # a loop does not repeat its first frame

    device = resolve_device(args.device)
    model = _load_model(args.model, device)
    size = model.hparams.image_size
    fit = make_fit(*keys[0].shape[:2], size, args.fit)
    model_keys = torch.stack([torch.from_numpy(io.from_uint8_rgb(to_model(k, fit))) for k in keys])
    keys_out = {p: key_output(k, fit) for p, k in zip(positions, keys, strict=True)}
    windows = plan_windows(
        positions, num_frames, model.hparams.num_frames, model.hparams.context_frames
    )
    steps = model.hparams.sample_steps if args.steps is None else args.steps
    sampler = model.hparams.sample_sampler if args.sampler is None else args.sampler
    guidance = model.hparams.sample_guidance if args.guidance is None else args.guidance
    init = model.hparams.sample_init if args.init is None else args.init
    init_sigma = model.hparams.sample_init_sigma if args.init_sigma is None else args.init_sigma

    bar = tqdm(total=len(windows), desc="windows", unit="window", disable=None, file=sys.stderr)

    def progress(info: dict) -> None:
        if info["i"] == info["steps"] - 1:
            bar.update()

    stream = interpolate_frames(
        model, model_keys, positions, num_frames, steps=steps, guidance=guidance,
        seed=args.seed, sampler=sampler, prompt=args.prompt, fps=args.fps, callback=progress,
        init=init, init_sigma=init_sigma, motion=not args.no_motion_prior,
    )  # fmt: skip
    frames = _frames(stream, fit, keys_out, shown)
    try:
        if kind == "png" and not out.exists():  # a new folder appears only when complete
            with safety.atomic_folder(out) as tmp:
                written = io.write_png_sequence(tmp, frames, name=out.name)
            written = [out / path.name for path in written]
        elif kind == "png":
            written = io.write_png_sequence(out, frames, name=out.name, overwrite=args.overwrite)
        else:
            written = io.write_video(out, frames, args.fps, overwrite=args.overwrite)
    finally:
        bar.close()
    uses_prior = init == "flow" and not args.no_motion_prior and model.motion_prior is not None
    record = {
        "command": "tween",
        "keys": [
            {"path": str(p.resolve()), "frame": f} for p, f in zip(paths, positions, strict=False)
        ],
        "loop": args.loop,
        "frames": shown,
        "key_frames": positions,
        "between": args.between,
        "timing": timing,
        "fit": args.fit,
        "size": {"width": fit.out_size[1], "height": fit.out_size[0]},
        "model": str(Path(args.model).resolve()) if Path(args.model).exists() else args.model,
        "model_config": dict(model.hparams),
        "steps": steps,
        "sampler": sampler,
        "guidance": guidance,
        "init": init,
        "init_sigma": init_sigma if init == "flow" else None,
        "motion_prior": uses_prior,
        "seed": args.seed,
        "prompt": args.prompt,
        "fps": args.fps,
        "windows": len(windows),
        "outputs": [str(p) for p in written],
    }
    io.write_sidecar(out, record)
    print(f"tween: {shown} frames ({len(keys)} keys, {len(windows)} windows) -> {out}")
    return 0
