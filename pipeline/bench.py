"""`animatic bench`: speed, FLOPs, model FLOPs utilisation and memory of both stages here.

One run measures the machine's fp32 matmul peak, then for each config (`tiny`, `shapes`, built
from the `model:` sections of configs/*/NAME.yaml with random weights; speed does not depend on
the weights) times the U-Net forward pass, a full keyframe sample, a full tween, tweens of
doubling length and a training step of each stage, each with its FLOPs (FlopCounterMode: 2 per
multiply-add, convolutions, matmuls and attention) and its ratio to the peak (model FLOPs
utilisation, MFU). Baselines in the same run: the same U-Net with textbook attention (scores
materialised, softmax, matmul) and with the math SDPA kernel; channels_last and (`--compile`)
torch.compile variants. Samplers are compared at 5-50 steps on an exact Gaussian denoiser, and
profiles of sampling split its time into conv, matmul, attention, norm, copies and elementwise
work, which explains an MFU below 50%.

Memory is the peak resident set size (RSS) above its level when the measured block starts: a
thread reads /proc/self/statm every 2 ms while the block runs, after freed heap memory has been
given back to the OS (glibc malloc_trim), so the baseline is live memory. tracemalloc cannot see
torch's allocations; getrusage's lifetime maximum (the fallback off Linux) only shows growth past
the process's previous peak.

This module is the command (arguments, the run, the JSON file); the work lives beside it:
bench_measure (timers, FLOPs, memory), bench_models (models and inputs), bench_stages (the
rows), bench_samplers, bench_profile and bench_report (the text), bench_general, bench_pipeline.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from keyframe.errors import UserError
from pipeline.bench_measure import describe_machine, matmul_peak
from pipeline.bench_models import (
    PROMPT,
    build_interpolate,
    build_keyframe,
    config_path,
    keyframe_inputs,
    train_batch,
    tween_inputs,
)
from pipeline.bench_profile import profile_ops
from pipeline.bench_report import format_report
from pipeline.bench_samplers import QUALITY_TOLERANCES, fewest_steps, sampler_quality
from pipeline.bench_stages import (
    FULL,
    QUICK,
    Plan,
    bench_forward,
    bench_keyframe_sample,
    bench_train_step,
    bench_tween,
    doubling_verdict,
    result_row,
    run_tween,
)

DEFAULT_CONFIGS = ("tiny", "shapes")
DEFAULT_LENGTHS = (16, 32, 64, 128)
METHOD = {
    "flops": "torch.utils.flop_counter.FlopCounterMode, 2 FLOPs per multiply-add; conv, "
    "matmul and attention (the CPU flash kernel added); elementwise ops not counted",
    "mfu": "achieved model GFLOP/s divided by the measured fp32 matmul peak",
    "memory": "peak RSS above the level at the block's start, /proc/self/statm sampled "
    "every 2 ms after gc + malloc_trim (getrusage max-rss growth without /proc)",
    "time": "time.perf_counter wall clock; forward passes: median of repeats after "
    "warm-up; samples and tweens: one run after a FLOP-counting warm-up run; train "
    "steps: median after a FLOP-counting warm-up step",
    "weights": "random, from the configs' model sections (speed does not depend on them)",
    "sampler_quality": "exact Gaussian denoiser of tests/test_sampling.py (random "
    "weights have no meaningful quality); error vs the exact probability-flow ODE solution",
}


# ---- arguments --------------------------------------------------------------------------------


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def _lengths(text: str) -> tuple[int, ...]:
    try:
        values = tuple(int(v) for v in text.split(","))
    except ValueError:
        values = ()
    if not values or min(values) < 3 or list(values) != sorted(set(values)):
        raise argparse.ArgumentTypeError(
            f"expected increasing frame counts >= 3 separated by commas, got {text!r}"
        )
    return values


def _names(text: str) -> tuple[str, ...]:
    names = tuple(n.strip() for n in text.split(",") if n.strip())
    if not names:
        raise argparse.ArgumentTypeError(f"expected config names separated by commas, got {text!r}")
    return names


def _add_measurement_arguments(parser: argparse.ArgumentParser) -> None:
    """What the default run (random-weight models of the configs) measures, and how much."""
    parser.add_argument(
        "--quick",
        action="store_true",
        help=f"fewer repeats, {QUICK.sample_steps} keyframe / {QUICK.tween_steps} tween sampling "
        f"steps, training batches of {QUICK.train_frames} frames (under 2 minutes)",
    )
    parser.add_argument(
        "--configs",
        type=_names,
        default=DEFAULT_CONFIGS,
        metavar="NAMES",
        help="comma-separated config names under configs/{keyframe,interpolate}/ "
        f"(default: {','.join(DEFAULT_CONFIGS)})",
    )
    parser.add_argument(
        "--threads", type=_positive, default=2, help="torch intra-op threads (default 2)"
    )
    parser.add_argument(
        "--images", type=_positive, default=4, help="images per keyframe sample (default 4)"
    )
    parser.add_argument(
        "--steps",
        type=_positive,
        default=None,
        help="sampling steps of samples and tweens (default: the config's; see --quick)",
    )
    parser.add_argument(
        "--tween-lengths",
        type=_lengths,
        default=DEFAULT_LENGTHS,
        metavar="N,N,...",
        help=f"tween lengths for the doubling rows (default {','.join(map(str, DEFAULT_LENGTHS))})",
    )
    parser.add_argument(
        "--compile", action="store_true", help="also time torch.compile'd U-Nets (slow to compile)"
    )
    parser.add_argument("--no-train", action="store_true", help="skip the training-step rows")


def _add_mode_arguments(parser: argparse.ArgumentParser) -> None:
    """The other runs: the user-facing jobs (--pipeline) or the general interpolator."""
    parser.add_argument(
        "--pipeline",
        action="store_true",
        help="instead: time the user-facing jobs (storyboard, tween, the README's main job) end "
        "to end with trained models, as fresh `animatic` processes; medians of --repeats",
    )
    parser.add_argument(
        "--general",
        metavar="MODEL",
        nargs="?",
        const="general",
        help="time the general interpolator (default: the shipped one) on large keys instead",
    )
    parser.add_argument(
        "--general-size",
        default="1280x720",
        metavar="WxH",
        help="with --general: the keys' size (1280x720)",
    )
    parser.add_argument("--keyframe-model", default="shapes", help="with --pipeline (shapes)")
    parser.add_argument("--tween-model", default="shapes", help="with --pipeline (shapes)")
    parser.add_argument("--repeats", type=_positive, default=3, help="with --pipeline (3)")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    _add_measurement_arguments(parser)
    _add_mode_arguments(parser)
    parser.add_argument("--out", type=Path, default=None, metavar="JSON", help="write all results")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing --out file")


# ---- the run ----------------------------------------------------------------------------------


def run_bench(args: argparse.Namespace, log: Callable[[str], None] = print) -> dict[str, Any]:
    """Every measurement; `log` gets progress lines. Returns the report (rows, doubling
    verdicts, sampler table, profiles)."""
    plan = QUICK if args.quick else FULL
    threads = torch.get_num_threads()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    for name in args.configs:  # all configs exist before anything long runs
        for stage in ("keyframe", "interpolate"):
            config_path(stage, name)
    try:
        # 1. the machine and its matmul peak, the MFU denominator
        report: dict[str, Any] = {"machine": describe_machine(args.threads), "quick": args.quick}
        peak = matmul_peak(plan.peak_size)
        report["peak_gflops"] = peak
        size = f"fp32 matmul {plan.peak_size}x{plan.peak_size}"
        note = "best of 10: the MFU denominator"
        rows = [result_row("peak", "-", size, gflops=peak, mfu=1.0, note=note)]
        log(f"matmul peak: {peak:.1f} GFLOP/s ({args.threads} threads)")
        # 2. each config's models
        report["doubling"], report["profiles"] = {}, {}
        for name in args.configs:
            rows += _bench_config(name, args, plan, peak, report, log)
        report["rows"] = rows
        # 3. the samplers
        log("samplers on an exact Gaussian denoiser")
        report["samplers"] = sampler_quality()
        report["fewest_steps"] = {
            f"{tol:g}": fewest_steps(report["samplers"], tol) for tol in QUALITY_TOLERANCES
        }
        report["method"] = dict(METHOD)
        return report
    finally:
        torch.set_num_threads(threads)


def _bench_config(
    name: str,
    args: argparse.Namespace,
    plan: Plan,
    peak: float,
    report: dict[str, Any],
    log: Callable[[str], None],
) -> list[dict[str, Any]]:
    """One config's rows; its doubling verdict and profiles go into `report`."""
    keyframe, key_config = build_keyframe(name)
    key_steps = args.steps or plan.sample_steps or keyframe.hparams.sample_steps
    rows = _bench_keyframe(name, keyframe, key_steps, args, plan, peak, log)
    tween, tween_config = build_interpolate(name)
    tween_steps = args.steps or plan.tween_steps or tween.hparams.sample_steps
    rows += _bench_tweens(name, tween, tween_steps, args, plan, peak, report, log)
    log(f"[{name}] profile of sampling")
    report["profiles"][name] = _profiles(keyframe, tween, args.images, key_steps, tween_steps, plan)
    if not args.no_train:
        log(f"[{name}] training steps")
        batch = train_batch(keyframe, key_config, plan.train_frames, video=False)
        rows.append(bench_train_step(name, "keyframe", keyframe, batch, plan.train_repeats, peak))
        batch = train_batch(tween, tween_config, plan.train_frames, video=True)
        rows.append(bench_train_step(name, "interpolate", tween, batch, plan.train_repeats, peak))
    return rows


def _bench_keyframe(name, keyframe, steps, args, plan, peak, log) -> list[dict[str, Any]]:
    """The keyframe U-Net's forward pass (a guided batch) and a full sample."""
    images = args.images
    log(f"[{name}] keyframe U-Net forward")
    label = f"keyframe U-Net forward: batch {2 * images} (cfg)"
    denoiser, inputs = keyframe.sampling_denoiser(), keyframe_inputs(keyframe, images)
    rows = bench_forward(name, label, denoiser, inputs, plan, peak, 2 * images, args.compile)
    log(f"[{name}] keyframe sample")
    rows.append(bench_keyframe_sample(name, keyframe, images, steps, peak))
    return rows


def _bench_tweens(name, tween, steps, args, plan, peak, report, log) -> list[dict[str, Any]]:
    """The video U-Net's forward pass (one window) and tweens of doubling length."""
    window = tween.hparams.num_frames
    log(f"[{name}] tween U-Net forward")
    label = f"tween U-Net forward: 1 x {window} frames"
    denoiser, inputs = tween.sampling_denoiser(), tween_inputs(tween, window)
    rows = bench_forward(name, label, denoiser, inputs, plan, peak, window, args.compile)
    log(f"[{name}] tweens of {', '.join(map(str, args.tween_lengths))} frames")
    doubling = bench_tween(name, tween, args.tween_lengths, steps, peak)
    report["doubling"][name] = doubling_verdict(doubling)
    return rows + doubling


def _profiles(keyframe, tween, images, key_steps, tween_steps, plan) -> dict[str, Any]:
    """Where a short keyframe sample and a one-window tween spend their time."""
    profile_steps = min(plan.profile_steps, key_steps)
    window = tween.hparams.num_frames
    return {
        "keyframe_sample": profile_ops(
            lambda: keyframe.sample([PROMPT] * images, steps=profile_steps, seed=0)
        ),
        "tween": profile_ops(
            lambda: run_tween(tween, window, min(plan.profile_steps, tween_steps))
        ),
    }


# ---- the command ------------------------------------------------------------------------------


def _run_general(args: argparse.Namespace, log: Callable[[str], None]) -> dict[str, Any]:
    """`--general`: the general interpolator on large keys (pipeline.bench_general)."""
    from pipeline.bench_general import bench_general

    try:
        width, height = (int(v) for v in args.general_size.lower().split("x"))
    except ValueError:
        raise UserError(
            f"--general-size {args.general_size}: expected WxH, e.g. 1280x720"
        ) from None
    torch.set_num_threads(args.threads)
    rows = bench_general(args.general, (height, width), log=log)
    return {"machine": describe_machine(args.threads), "general": rows}


def _run_pipeline(args: argparse.Namespace, log: Callable[[str], None]) -> dict[str, Any]:
    """`--pipeline`: the user-facing jobs end to end (pipeline.bench_pipeline), printed."""
    from pipeline.bench_pipeline import bench_pipeline

    rows = bench_pipeline(args.keyframe_model, args.tween_model, args.repeats, args.threads, log)
    report = {"machine": describe_machine(args.threads), "pipeline": rows}
    for row in rows:
        runs = ", ".join(f"{s:.1f}" for s in row["runs_s"])
        print(f"  {row['what']:70s} median {row['median_s']:6.1f} s  ({runs})")
    return report


def run(args: argparse.Namespace) -> int:
    """`animatic bench`: one of the three runs, printed and (--out) written as JSON."""
    from pipeline.io import atomic_path, check_writable, provenance

    if args.out is not None:
        check_writable(args.out, args.overwrite)
    start = time.perf_counter()

    def log(line: str) -> None:
        print(f"[{time.perf_counter() - start:6.1f} s] {line}", flush=True)

    if args.general:
        report = _run_general(args, log)
    elif args.pipeline:
        report = _run_pipeline(args, log)
    else:
        report = run_bench(args, log)
        print(format_report(report))
    if args.out is not None:
        text = json.dumps({**report, "provenance": provenance()}, indent=2)
        with atomic_path(args.out) as tmp:
            tmp.write_text(text + "\n", encoding="utf-8")
        print(f"wrote {args.out}")
    return 0
