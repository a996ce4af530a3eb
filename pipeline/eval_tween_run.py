"""The `animatic eval tween` run: check the options, pick the tweens to score (a trained model,
one per sampling init, or a built-in, and the baselines), score them, print and report.
Real clips and line art (`--set`) go to pipeline.eval_video.
"""

from __future__ import annotations

import argparse
from typing import Any

from keyframe.errors import UserError
from keyframe.sampling_options import check_sampling_options
from pipeline import baselines
from pipeline.devices import resolve_device
from pipeline.eval_common import check_at_least, fmt
from pipeline.eval_tween import (
    BUILTIN_TWEEN,
    Tween,
    builtin_tween,
    eval_tween,
    model_tween,
    tween_clips,
)
from pipeline.judge import MIN_SIZE

BASELINES = ("baseline-crossfade", "baseline-flow", "flow-paths")


def _run_video_sets(args: argparse.Namespace) -> dict:
    """Real clips and line art (pipeline.eval_video) with the general interpolator or built-ins."""
    from pipeline import eval_video

    if "shapes" in args.sets:
        raise UserError("--set: score shapes apart from the real sets (one run each)")
    check_at_least(args, "clips")
    check_sampling_options(args.steps, prefix="--")
    tweens = {}
    if args.model in BUILTIN_TWEEN:
        tweens[args.model] = builtin_tween(args.model, [])
    else:
        from interpolate.general.pipeline import GeneralInterpolator

        pipe = GeneralInterpolator.from_pretrained(args.model, device=resolve_device(args.device))
        tweens[args.model] = eval_video.general_tween(pipe, args.seed, args.steps)
    if not args.no_baselines:
        for name in BASELINES:
            tweens.setdefault(name, builtin_tween(name, []))
    print(f"tween eval of {args.model} on {', '.join(args.sets)}, gaps {list(args.gaps)}")
    report = eval_video.run_sets(args, tweens)
    report["model"] = args.model
    report["settings"] = {"sets": list(args.sets), "gaps": list(args.gaps), "seed": args.seed,
                          "steps": args.steps, "splits": list(args.splits)}  # fmt: skip
    return report


def _load_tween_model(name: str, device: str):
    from interpolate.pipeline import InterpolatePipeline

    return InterpolatePipeline.from_pretrained(name, device=device)


def _clip_length(args: argparse.Namespace) -> int:
    """--frames, or twice the largest gap plus one; long enough for the largest gap."""
    frames = 2 * max(args.gaps) + 1 if args.frames is None else args.frames
    if frames < max(args.gaps) + 1:
        raise UserError(
            f"--frames {frames}: gap {max(args.gaps)} needs at least {max(args.gaps) + 1}"
        )
    return frames


def _model_and_size(args: argparse.Namespace):
    """The trained model (None for a built-in) and the frame size to score at."""
    model, size = None, 64 if args.size is None else args.size
    if args.model not in BUILTIN_TWEEN:
        model = _load_tween_model(args.model, resolve_device(args.device))
        own = int(model.config.image_size)
        if args.size is not None and args.size != own:
            raise UserError(f"--size {args.size}: model {args.model} makes {own} px frames")
        if own < MIN_SIZE:
            raise UserError(f"model {args.model}: its {own} px frames are too small to judge")
        size = own
    return model, size


def _model_tweens(args: argparse.Namespace, model) -> tuple[dict[str, Tween], tuple, float, Any]:
    """A trained model's tweens, one per sampling init (and its motion prior's paths as a
    baseline), with the inits, the init noise level and the motion prior used."""
    from interpolate.flow import check_init

    inits = args.init or (model.config.sample_init,)
    init_sigma = model.config.sample_init_sigma if args.init_sigma is None else args.init_sigma
    for kind in inits:
        check_init(kind, init_sigma)
    models = {
        (args.model if len(inits) == 1 else f"{args.model} init={kind}"): model_tween(
            model, args.steps, args.seed, kind, init_sigma, not args.no_motion_prior
        )
        for kind in inits
    }
    prior = None if args.no_motion_prior else model.motion_prior
    if prior is not None and not args.no_baselines:
        models["motion-paths"] = baselines.motion_paths(prior)
    return models, inits, init_sigma, prior


def _print_table(args: argparse.Namespace, frames: int, size: int, results: dict) -> None:
    """Per tween and gap: PSNR, SSIM, trajectory error and ghosting."""
    print(f"tween eval: {args.clips} clips of {frames} frames at {size} px, seed {args.seed}")
    print(f"  {'model':24s} {'gap':>4s} {'PSNR':>7s} {'SSIM':>6s} {'traj px':>8s} {'ghost':>7s}")
    for name, table in results.items():
        for gap, row in table.items():
            print(
                f"  {name:24s} {gap:4d} {fmt(row['psnr'], '7.2f')} {fmt(row['ssim'], '6.3f')}"
                f" {fmt(row['trajectory_px'], '8.2f')} {fmt(row['ghosting'], '7.1%')}"
            )


def run_tween_eval(args: argparse.Namespace) -> dict:
    """`animatic eval tween`: score the model and the baselines per gap; returns the report."""
    if args.sets != ("shapes",):
        return _run_video_sets(args)
    # 1. check the options, load the model, simulate the clips at its size
    check_at_least(args, "clips")
    check_sampling_options(args.steps, prefix="--")
    check_at_least(args, "size", least=MIN_SIZE)
    frames = _clip_length(args)
    model, size = _model_and_size(args)
    clips = tween_clips(args.clips, size, frames, args.seed)
    # 2. the tweens to score: the model's (or a built-in), then the baselines
    if model is None:
        if args.init is not None or args.init_sigma is not None or args.no_motion_prior:
            raise UserError(
                f"--init/--init-sigma/--no-motion-prior: only for a trained model, not {args.model}"
            )
        models = {args.model: builtin_tween(args.model, clips)}
        inits, init_sigma, prior = None, None, None
    else:
        models, inits, init_sigma, prior = _model_tweens(args, model)
    if not args.no_baselines:
        for name in BASELINES:
            models.setdefault(name, builtin_tween(name, clips))
    # 3. score, print, report
    results = {
        name: eval_tween(tween, clips, args.gaps, progress=name) for name, tween in models.items()
    }
    _print_table(args, frames, size, results)
    settings = {"clips": args.clips, "size": size, "frames": frames, "gaps": list(args.gaps)}
    settings.update(seed=args.seed, steps=args.steps, init=inits, init_sigma=init_sigma)
    settings["motion_prior"] = prior is not None and "flow" in inits  # the model rows used it
    return {
        "eval": "tween",
        "model": args.model,
        "settings": settings,
        "results": {name: {str(g): row for g, row in t.items()} for name, t in results.items()},
    }
