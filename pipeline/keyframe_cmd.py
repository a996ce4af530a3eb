"""`animatic keyframe "PROMPT" --out FILE.png`: draw keyframes from text with a trained model.

Writes FILE.png (FILE_0.png, FILE_1.png, ... with --num N) and next to each image a JSON sidecar
(FILE.png.json) with all it takes to draw it again: prompt, negative prompt, its own seed (image i
uses seed + i), steps, guidance, sampler, size, the model and the SHA-256 of its weights (for a
diffusers folder, a fingerprint of its configs), the vocabulary check, the command, and versions.

The prompt is checked against the words the model was trained on (keyframe.vocabulary): unknown
words get one line, a prompt naming no subject the model knows is an error unless --force.
`--model diffusers:PATH` draws with a local diffusers text-to-image folder instead
(keyframe.diffusers_model).
"""

from __future__ import annotations

import argparse
import hashlib
import secrets
import shlex
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from keyframe.errors import UserError
from pipeline.devices import resolve_device

DEFAULT_MODEL = "shapes"
MAX_IMAGES = 64
BATCH = 8  # images sampled at once; results do not depend on it (per-image seeds)
Progress = Callable[[int, bool], None]  # progress(images, first): see Backend


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("prompt", metavar="PROMPT", help="what to draw")
    parser.add_argument("--out", required=True, metavar="FILE.png", help="output image")
    parser.add_argument(
        "--model",
        "--keyframe-model",
        dest="model",
        default=DEFAULT_MODEL,
        metavar="PATH_OR_NAME",
        help=f"model folder, training .ckpt, shipped model name (default: {DEFAULT_MODEL}), or "
        "diffusers:PATH, a local diffusers text-to-image folder (animatic[diffusers] extra)",
    )
    parser.add_argument(
        "--seed", type=int, default=None, metavar="S", help="random seed (default: a new one)"
    )
    parser.add_argument(
        "--steps", type=int, default=None, metavar="N", help="sampling steps (model default)"
    )
    parser.add_argument(
        "--guidance", type=float, default=None, metavar="G", help="guidance scale (model default)"
    )
    parser.add_argument(
        "--negative", default="", metavar="TEXT", help="negative prompt: what to steer away from"
    )
    parser.add_argument(
        "--sampler", default=None, metavar="NAME", help="euler, euler_ancestral, heun, dpmpp_2m"
    )
    parser.add_argument(
        "--place",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="put the subject where the prompt's position words say (top left, center, ...): "
        "redraw from shifted noise when it lands elsewhere (model default)",
    )
    parser.add_argument("--num", type=int, default=1, metavar="N", help="number of images")
    parser.add_argument(
        "--size", type=int, default=None, metavar="PX", help="image side (model default)"
    )
    parser.add_argument("--device", default="auto", help="cpu, cuda, cuda:1, ... (default: auto)")
    parser.add_argument("--overwrite", action="store_true", help="replace existing images")
    parser.add_argument(
        "--force",
        action="store_true",
        help="draw a prompt that names no subject the model was trained on (else an error)",
    )


def output_paths(out: Path, num: int) -> list[Path]:
    """FILE.png for one image; FILE_0.png, FILE_1.png, ... for several."""
    if num == 1:
        return [out]
    return [out.with_name(f"{out.stem}_{i}{out.suffix}") for i in range(num)]


def batch_progress(bar, steps: int) -> Progress:
    """Advance a tqdm bar by the images of each sampling step; a batch's second and later passes
    (placement redraws) first add their steps to the bar's total, so it never runs past it."""
    passes = 0

    def progress(images: int, first: bool) -> None:
        nonlocal passes
        if first:
            passes += 1
            if passes > 1:
                bar.total += steps * images
                bar.set_description("keyframe (placing)")
        bar.update(images)

    return progress


def _check_args(args: argparse.Namespace) -> None:
    """Fail on bad options before the model loads."""
    from keyframe.sampling_options import check_sampling_options

    if Path(args.out).suffix.lower() != ".png":
        raise UserError(f"--out {args.out}: expected a .png file name")
    if not 1 <= args.num <= MAX_IMAGES:
        raise UserError(f"--num: expected 1 to {MAX_IMAGES} images, got {args.num}")
    if args.seed is not None and not 0 <= args.seed < 2**63 - args.num:
        raise UserError(f"--seed: expected an integer from 0 to 2**63 - 1, got {args.seed}")
    if args.size is not None and args.size < 1:
        raise UserError(f"--size: expected a positive number of pixels, got {args.size}")
    check_sampling_options(args.steps, args.guidance, args.sampler, prefix="--")


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _weights_file(model_path: Path) -> Path:
    from keyframe.pretrained import WEIGHTS_NAME

    return model_path / WEIGHTS_NAME if model_path.is_dir() else model_path


@dataclass
class Backend:
    """A loaded keyframe model for this command: its record, its resolved settings, and
    draw(count, seed, progress) -> uint8 (count, h, w, 3) for the prompt (image i: seed + i);
    progress(images, first) after every sampling step of `images` images, `first` on a pass's
    first step (placement redraws some images in further passes)."""

    model: dict
    settings: dict
    draw: Callable[[int, int, Progress], np.ndarray]


def _shapes_backend(args: argparse.Namespace, model_path: Path) -> Backend:
    """A trained model (shipped name, folder or .ckpt) with its sampling defaults."""
    from keyframe.pipeline import KeyframePipeline
    from keyframe.sampling_options import with_defaults
    from pipeline import io

    pipe = KeyframePipeline.from_pretrained(model_path, device=resolve_device(args.device))
    config = pipe.config
    size = config.image_size if args.size is None else args.size
    pipe.latent_size(size)  # a bad size fails here, before the progress bar
    settings = with_defaults(
        pipe.sampling_defaults(), steps=args.steps, guidance=args.guidance, sampler=args.sampler
    )
    if args.place and pipe.placement is None:  # before the progress bar, too
        raise UserError(f"--place: model {args.model} has no placement plug-in (shapes models)")
    settings["place"] = pipe.places_by_default if args.place is None else args.place
    settings["size"] = [size, size]

    def draw(count: int, seed: int, progress: Progress) -> np.ndarray:
        images = pipe(
            [args.prompt] * count, negative_prompts=args.negative, steps=settings["steps"],
            guidance=settings["guidance"], sampler=settings["sampler"], seed=seed, size=size,
            callback=lambda info: progress(len(info["x"]), info["i"] == 0),
            place=settings["place"],
        )  # fmt: skip
        return np.stack([io.to_uint8_rgb(image.numpy()) for image in images])

    model = {"name": args.model, "path": str(model_path.resolve())}
    model["sha256"] = _sha256(_weights_file(model_path))
    return Backend(model, settings, draw)


def _diffusers_backend(args: argparse.Namespace) -> Backend:
    """A local diffusers text-to-image folder (keyframe.diffusers_model)."""
    from keyframe import diffusers_model as dm
    from keyframe.sampling_options import with_defaults

    if args.place:
        raise UserError("--place: the shapes models' plug-in; a diffusers model has no layout")
    model = dm.load_diffusers(args.model, resolve_device(args.device))
    size = model.native_size if args.size is None else args.size
    dm.check_size(model, size, size)
    settings = with_defaults(  # sampler None: the folder's own scheduler
        model.sampling_defaults(), steps=args.steps, guidance=args.guidance, sampler=args.sampler
    )
    settings.update(place=False, size=[size, size])

    def draw(count: int, seed: int, progress: Progress) -> np.ndarray:
        return dm.sample_diffusers(
            model, [args.prompt] * count, [args.negative] * count,
            list(range(seed, seed + count)), settings["steps"], settings["guidance"],
            (size, size), sampler=settings["sampler"], callback=lambda: progress(count, False),
        )  # fmt: skip

    return Backend(dm.describe(model), settings, draw)


def check_vocabulary(args: argparse.Namespace, model_path: Path | None) -> tuple[dict, list[str]]:
    """Check the prompt (and negative prompt) against the model's vocabulary: a UserError for a
    prompt naming no subject the model knows, unless --force. Returns the check's sidecar record
    and the lines to print once the model has loaded (a note when it records no vocabulary, the
    unknown words)."""
    from keyframe.vocabulary import check_prompt, describe, load_vocabulary

    vocabulary = None if model_path is None else load_vocabulary(model_path)
    if vocabulary is None:
        note = f"note: model {args.model} records no vocabulary; the prompt is not checked"
        return check_prompt(None, args.prompt).record(), [note]
    check = check_prompt(vocabulary, args.prompt)
    words = describe(check, vocabulary, args.model)
    if check.flagged:
        words += _knowing_model(args.prompt, args.model)
    if check.no_subject and not args.force:
        raise UserError(f"prompt {args.prompt!r}: {words}; --force draws it anyway")
    lines = []
    if check.flagged:
        forced = " (--force)" if check.no_subject else ""
        lines.append(f"warning: prompt {args.prompt!r}: {words}; drawn anyway{forced}")
    unknown = vocabulary.unknown(args.negative)
    if unknown:
        lines.append(f"warning: negative prompt: unknown words: {', '.join(unknown)}")
    return check.record(), lines


def _knowing_model(prompt: str, model: str) -> str:
    """A pointer to the first other shipped keyframe model whose vocabulary has every word and
    a subject of the prompt ("; shipped model X knows every word (--model X)"), else ""."""
    from keyframe.pretrained import SHIPPED_DIR, shipped_models
    from keyframe.vocabulary import check_prompt, load_vocabulary

    for name in shipped_models():
        if name == model:
            continue
        check = check_prompt(load_vocabulary(SHIPPED_DIR / name), prompt)
        if check.checked and not check.flagged:
            return f"; shipped model {name} knows every word (--model {name})"
    return ""


def run(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from keyframe import diffusers_model
    from keyframe.pretrained import resolve_model
    from pipeline import io

    _check_args(args)
    paths = output_paths(Path(args.out), args.num)
    for path in paths:
        io.check_writable(path, args.overwrite)
    if diffusers_model.is_diffusers(args.model):
        diffusers_model.diffusers_folder(args.model)
        vocabulary, lines = check_vocabulary(args, None)
        backend = _diffusers_backend(args)
    else:
        model_path = resolve_model(args.model)
        vocabulary, lines = check_vocabulary(args, model_path)
        backend = _shapes_backend(args, model_path)
    for line in lines:
        print(line, file=sys.stderr)
    seed = secrets.randbelow(2**31) if args.seed is None else args.seed
    steps = backend.settings["steps"]
    with tqdm(total=steps * args.num, desc="keyframe", unit="step", file=sys.stderr) as bar:
        for start in range(0, args.num, BATCH):
            count = min(BATCH, args.num - start)
            images = backend.draw(count, seed + start, batch_progress(bar, steps))
            for offset, image in enumerate(images):
                index = start + offset
                io.write_png(paths[index], image, overwrite=args.overwrite)
                settings = {"prompt": args.prompt, "negative_prompt": args.negative,
                            "seed": seed + index, **backend.settings}  # fmt: skip
                record = {"kind": "keyframe", **settings, "model": backend.model,
                          "vocabulary": vocabulary,
                          "command": _command(paths[index], args.model, settings)}  # fmt: skip
                io.write_sidecar(paths[index], record)
                tqdm.write(str(paths[index]), file=sys.stdout)
    print(f"seed {seed}" + (f" (images use {seed}..{seed + args.num - 1})" if args.num > 1 else ""))
    return 0


def _command(path: Path, model: str, settings: dict) -> str:
    """The command that draws this one image again."""
    argv = ["animatic", "keyframe", settings["prompt"], "--out", str(path), "--model", model]
    if settings["negative_prompt"]:
        argv += ["--negative", settings["negative_prompt"]]
    for key in ("seed", "steps", "guidance", "sampler"):
        if settings[key] is not None:
            argv += [f"--{key}", str(settings[key])]
    if not model.startswith("diffusers:"):
        argv.append("--place" if settings["place"] else "--no-place")
    argv += ["--size", str(settings["size"][0])]
    return shlex.join(argv)
