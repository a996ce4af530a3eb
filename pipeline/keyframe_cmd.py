"""`animatic keyframe "PROMPT" --out FILE.png`: draw keyframes from text with a trained model.

Writes FILE.png (FILE_0.png, FILE_1.png, ... with --num N) and next to each image a JSON sidecar
(FILE.png.json) with all it takes to draw it again: prompt, negative prompt, its own seed (image i
uses seed + i), steps, guidance, sampler, size, the model and the SHA-256 of its weights, the
command, and versions.
"""

from __future__ import annotations

import argparse
import hashlib
import secrets
import shlex
import sys
from pathlib import Path

from keyframe.errors import UserError
from pipeline.devices import resolve_device

DEFAULT_MODEL = "shapes"
MAX_IMAGES = 64
BATCH = 8  # images sampled at once; results do not depend on it (per-image seeds)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("prompt", metavar="PROMPT", help="what to draw")
    parser.add_argument("--out", required=True, metavar="FILE.png", help="output image")
    parser.add_argument(
        "--model",
        default=DEFAULT_MODEL,
        metavar="PATH_OR_NAME",
        help=f"model folder, training .ckpt, or shipped model name (default: {DEFAULT_MODEL})",
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


def output_paths(out: Path, num: int) -> list[Path]:
    """FILE.png for one image; FILE_0.png, FILE_1.png, ... for several."""
    if num == 1:
        return [out]
    return [out.with_name(f"{out.stem}_{i}{out.suffix}") for i in range(num)]


def _check_args(args: argparse.Namespace) -> None:
    """Fail on bad options before the model loads."""
    from keyframe.module import MAX_SAMPLE_STEPS, check_sampling_options
    from keyframe.sampling import SAMPLERS

    if Path(args.out).suffix.lower() != ".png":
        raise UserError(f"--out {args.out}: expected a .png file name")
    if not 1 <= args.num <= MAX_IMAGES:
        raise UserError(f"--num: expected 1 to {MAX_IMAGES} images, got {args.num}")
    if args.seed is not None and not 0 <= args.seed < 2**63 - args.num:
        raise UserError(f"--seed: expected an integer from 0 to 2**63 - 1, got {args.seed}")
    if args.size is not None and args.size < 1:
        raise UserError(f"--size: expected a positive number of pixels, got {args.size}")
    try:
        check_sampling_options(
            MAX_SAMPLE_STEPS if args.steps is None else args.steps,
            0.0 if args.guidance is None else args.guidance,
            next(iter(SAMPLERS)) if args.sampler is None else args.sampler,
        )
    except UserError as err:
        raise UserError(f"--{err}") from None


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _weights_file(model_path: Path) -> Path:
    from keyframe.pretrained import WEIGHTS_NAME

    return model_path / WEIGHTS_NAME if model_path.is_dir() else model_path


def run(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from keyframe.pretrained import from_pretrained, resolve_model
    from pipeline import io

    _check_args(args)
    paths = output_paths(Path(args.out), args.num)
    for path in paths:
        io.check_writable(path, args.overwrite)
    model_path = resolve_model(args.model)
    module = from_pretrained(model_path, device=resolve_device(args.device))
    hp = module.hparams
    steps = hp.sample_steps if args.steps is None else args.steps
    guidance = hp.sample_guidance if args.guidance is None else args.guidance
    sampler = hp.sample_sampler if args.sampler is None else args.sampler
    place = bool(hp.sample_place) if args.place is None else args.place
    size = hp.image_size if args.size is None else args.size
    module.latent_size(size)  # a bad size fails here, before the progress bar
    seed = secrets.randbelow(2**31) if args.seed is None else args.seed
    model = {
        "name": args.model,
        "path": str(model_path.resolve()),
        "sha256": _sha256(_weights_file(model_path)),
    }

    with tqdm(total=steps * args.num, desc="keyframe", unit="step", file=sys.stderr) as bar:
        for start in range(0, args.num, BATCH):
            count = min(BATCH, args.num - start)
            images = module.sample(
                [args.prompt] * count,
                negative_prompts=args.negative,
                steps=steps,
                guidance=guidance,
                sampler=sampler,
                seed=seed + start,
                size=size,
                callback=lambda info, n=count: bar.update(n),
                place=place,
            )
            for offset, image in enumerate(images):
                index = start + offset
                path = paths[index]
                io.write_png(path, io.to_uint8_rgb(image.numpy()), overwrite=args.overwrite)
                settings = {
                    "prompt": args.prompt,
                    "negative_prompt": args.negative,
                    "seed": seed + index,
                    "steps": steps,
                    "guidance": guidance,
                    "sampler": sampler,
                    "place": place,
                    "size": [size, size],
                }
                io.write_sidecar(
                    path,
                    {
                        "kind": "keyframe",
                        **settings,
                        "model": model,
                        "command": _command(path, args.model, settings),
                    },
                )
                tqdm.write(str(path), file=sys.stdout)
    print(f"seed {seed}" + (f" (images use {seed}..{seed + args.num - 1})" if args.num > 1 else ""))
    return 0


def _command(path: Path, model: str, settings: dict) -> str:
    """The command that draws this one image again."""
    argv = ["animatic", "keyframe", settings["prompt"], "--out", str(path), "--model", model]
    if settings["negative_prompt"]:
        argv += ["--negative", settings["negative_prompt"]]
    for key in ("seed", "steps", "guidance", "sampler"):
        argv += [f"--{key}", str(settings[key])]
    argv.append("--place" if settings["place"] else "--no-place")
    argv += ["--size", str(settings["size"][0])]
    return shlex.join(argv)
