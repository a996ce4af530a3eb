"""The measurements of `animatic bench`, one row each: the network forward pass (with its
baselines and variants), a full keyframe sample, tweens of growing length and a training step,
with FLOPs, time, MFU and peak memory; `Plan` says how much to measure.
"""

from __future__ import annotations

import copy
import statistics
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from pipeline.bench_measure import (
    MB,
    PeakRSS,
    attention_variant,
    count_flops,
    net_calls,
    timings,
)
from pipeline.bench_models import CLIP_PROMPT, PROMPT, random_keys


@dataclass(frozen=True)
class Plan:
    """How much to measure. `--quick` trades repeats, sampling steps and training batch size for
    a short run: time per step, MFU and the growth with tween length do not need many steps."""

    repeats: int  # timed forward passes (the median is reported), after `warmup` untimed ones
    warmup: int
    peak_size: int  # side of the square matmul that measures the peak
    sample_steps: int | None  # keyframe sampling steps (None: the config's)
    tween_steps: int | None  # tween sampling steps (None: the config's)
    train_repeats: int
    train_frames: int | None  # cap on the frames (images, or clips x frames) per training batch
    profile_steps: int


QUICK = Plan(
    repeats=3,
    warmup=1,
    peak_size=1024,
    sample_steps=5,
    tween_steps=2,
    train_repeats=1,
    train_frames=16,
    profile_steps=2,
)
FULL = Plan(
    repeats=10,
    warmup=2,
    peak_size=2048,
    sample_steps=None,
    tween_steps=None,
    train_repeats=3,
    train_frames=None,
    profile_steps=5,
)


# ---- rows -------------------------------------------------------------------------------------


def result_row(section: str, config: str, what: str, **values: Any) -> dict[str, Any]:
    """One measurement: its section, config and description first, then its values."""
    return {"section": section, "config": config, "what": what, **values}


def add_rates(row: dict[str, Any], peak: float) -> dict[str, Any]:
    """Add GFLOP/s and MFU to a row holding time_s and flops."""
    flops, seconds = row.get("flops"), row.get("time_s")
    if flops and seconds:
        row["gflops"] = flops / seconds / 1e9
        row["mfu"] = row["gflops"] / peak
    return row


# ---- the network forward pass -----------------------------------------------------------------

ATTENTION_BASELINES = (
    ("textbook", "baseline: attention written out (scores, softmax, matmul)"),
    ("math", "baseline: SDPA math kernel (unfused)"),
)


def _forward_call(
    model: nn.Module, inputs: tuple[torch.Tensor, torch.Tensor, dict], channels_last: bool = False
) -> Callable[[], Any]:
    """One network call on `inputs`. A video net folds frames into the batch itself; its
    weights are what changes format, so only image inputs go channels_last."""
    x, sigma, cond = inputs
    if channels_last and x.ndim == 4:
        x = x.contiguous(memory_format=torch.channels_last)
    return lambda: model(x, sigma, **cond)


def _median_time(fn: Callable[[], Any], plan: Plan) -> float:
    """The median of `plan.repeats` timed calls of fn() without gradients, after warm-up."""
    with torch.no_grad():
        return statistics.median(timings(fn, plan.repeats, plan.warmup))


def _channels_last_time(denoiser: nn.Module, inputs, plan: Plan) -> float:
    """The median time with the network's weights (and image inputs) in channels_last."""
    from keyframe.diffusion import Denoiser

    net = copy.deepcopy(denoiser.net).to(memory_format=torch.channels_last)
    last = Denoiser(net, denoiser.sigma_data)
    return _median_time(_forward_call(last, inputs, channels_last=True), plan)


def _compiled_time(denoiser: nn.Module, inputs, plan: Plan) -> tuple[float | None, str]:
    """The torch.compile'd network's median time and a note; None and the error if it fails."""
    from keyframe.diffusion import Denoiser

    compiled = Denoiser(torch.compile(copy.deepcopy(denoiser.net)), denoiser.sigma_data)
    start = time.perf_counter()
    try:
        with torch.no_grad():
            _forward_call(compiled, inputs)()
    except Exception as err:  # no C++ compiler, an unsupported op: report, carry on
        return None, f"failed: {err}"[:200]
    first = time.perf_counter() - start
    return _median_time(
        _forward_call(compiled, inputs), plan
    ), f"first call (compiling) {first:.1f} s"


def bench_forward(
    config: str,
    label: str,
    denoiser: nn.Module,
    inputs: tuple[torch.Tensor, torch.Tensor, dict],
    plan: Plan,
    peak: float,
    frames: int,
    compile_net: bool,
) -> list[dict[str, Any]]:
    """The network forward pass as shipped, then the baselines and variants as time ratios."""
    # 1. as shipped (fused SDPA): FLOPs, then the median time
    with torch.no_grad():
        flops, _ = count_flops(_forward_call(denoiser, inputs))
    base_time = _median_time(_forward_call(denoiser, inputs), plan)
    note = "fused SDPA attention (as shipped)"
    row = result_row("forward", config, label, time_s=base_time, flops=flops,
                     per_frame_s=base_time / frames, note=note)  # fmt: skip
    rows = [add_rates(row, peak)]

    def variant(what: str, seconds: float, note: str) -> None:
        row = result_row("forward", config, f"  {what}", time_s=seconds, flops=flops)
        row["ratio"] = seconds / base_time
        row["note"] = note
        rows.append(add_rates(row, peak))

    # 2. the baselines: attention written out, and SDPA's unfused math kernel
    for kind, note in ATTENTION_BASELINES:
        with attention_variant(kind):
            variant(f"{kind} attention", _median_time(_forward_call(denoiser, inputs), plan), note)

    # 3. channels_last weights (and image inputs)
    seconds = _channels_last_time(denoiser, inputs, plan)
    faster = seconds < base_time * 0.95
    variant("channels_last", seconds,
            "faster: worth switching on" if faster else "not faster here: leave off")  # fmt: skip

    # 4. torch.compile (--compile)
    if compile_net:
        seconds, note = _compiled_time(denoiser, inputs, plan)
        if seconds is None:
            rows.append(result_row("forward", config, "  torch.compile", note=note))
        else:
            variant("torch.compile", seconds, note)
    return rows


# ---- samples, tweens and training steps -------------------------------------------------------


def bench_keyframe_sample(
    config: str, module, images: int, steps: int, peak: float
) -> dict[str, Any]:
    """A full guided sample of `images` images: text encoding, sampler, decoding."""
    prompts = [PROMPT] * images
    net = module.sampling_denoiser().net

    def run() -> torch.Tensor:
        return module.sample(prompts, steps=steps, seed=0)

    flops, _ = count_flops(run)
    with net_calls(net) as calls, PeakRSS() as memory:
        start = time.perf_counter()
        run()
        seconds = time.perf_counter() - start
    guidance = module.hparams.sample_guidance
    batches = sorted(set(calls["batches"]))
    one_batch = guidance in (0, 1) or batches == [2 * images]
    share = calls["seconds"] / seconds
    batched = "cond + uncond in one batch" if one_batch else "NOT batched"
    row = result_row(
        "sample",
        config,
        f"keyframe sample: {images} images, {steps} steps",
        time_s=seconds,
        flops=flops,
        per_frame_s=seconds / images,
        mem_mb=memory.peak / MB,
        net_calls=len(calls["batches"]),
        net_batch=batches,
        net_share=share,
        cfg_one_batch=one_batch,
        note=f"guidance {guidance:g}: {len(calls['batches'])} U-Net calls of batch "
        f"{'/'.join(map(str, batches))} ({batched}); {share:.0%} of the time in the U-Net",
    )
    return add_rates(row, peak)


def run_tween(module, length: int, steps: int) -> int:
    """Stream a tween of `length` frames between two keys, dropping frames as they come out
    (as a video writer would); returns the frame count."""
    from interpolate.inbetween import interpolate_frames

    prompt = CLIP_PROMPT if module.text is not None else None
    frames = interpolate_frames(
        module, random_keys(module), [0, length - 1], length, steps=steps, seed=0, prompt=prompt
    )
    return sum(1 for _ in frames)


def bench_tween(
    config: str, module, lengths: Sequence[int], steps: int, peak: float
) -> list[dict[str, Any]]:
    """One tween with its FLOPs, then tweens of each length: time and peak memory."""
    from interpolate.inbetween import plan_windows

    hp = module.hparams
    net = module.sampling_denoiser().net
    first = lengths[0]
    flops, _ = count_flops(lambda: run_tween(module, first, steps))  # also the warm-up
    rows = []
    for length in lengths:
        windows = plan_windows([0, length - 1], length, hp.num_frames, hp.context_frames)
        with net_calls(net) as calls, PeakRSS() as memory:
            start = time.perf_counter()
            made = run_tween(module, length, steps)
            seconds = time.perf_counter() - start
        row = result_row(
            "tween",
            config,
            f"tween: {length} frames, 2 keys, {steps} steps",
            time_s=seconds,
            per_frame_s=seconds / made,
            mem_mb=memory.peak / MB,
            frames=length,
            windows=len(windows),
            net_calls=len(calls["batches"]),
            net_share=calls["seconds"] / seconds,
            note=f"{len(windows)} window(s) of <= {hp.num_frames} frames, "
            f"{len(calls['batches'])} net calls",
        )
        if length == first:
            row["flops"] = flops
        rows.append(add_rates(row, peak))
    for previous, row in zip(rows, rows[1:], strict=False):
        row["time_ratio"] = row["time_s"] / previous["time_s"]
    return rows


def doubling_verdict(rows: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """How time and peak memory grow with tween length. Time is linear when the last step in
    length multiplies time by about the same factor (windows cost the same and their number
    grows with length); memory is flat when the longest tween peaks below twice the lowest."""
    lengths = [r["frames"] for r in rows]
    times = [r["time_s"] for r in rows]
    memory = [r["mem_mb"] for r in rows]
    ratios = [b / a for a, b in zip(times, times[1:], strict=False)]
    last = ratios[-1] / (lengths[-1] / lengths[-2]) if ratios else 1.0
    spread = max(memory) / max(min(memory), 1.0)
    return {
        "lengths": lengths,
        "time_ratios": ratios,
        "per_frame_ms": [1000 * r["per_frame_s"] for r in rows],
        "ms_per_net_call": [1000 * r["time_s"] / max(r["net_calls"], 1) for r in rows],
        "mem_mb": memory,
        "mem_max_over_min": spread,
        "time_linear": 0.8 <= last <= 1.25,
        "memory_flat": spread < 2.0,
    }


def bench_train_step(
    config: str, stage: str, module, batch: dict[str, Any], repeats: int, peak: float
) -> dict[str, Any]:
    """One optimizer step as `fit` runs it: training_step, backward, AdamW, EMA update. The seed
    is reset before each step, so every step draws the same noise, mask and clip length."""
    module.train()
    optimizer = torch.optim.AdamW(module.trainable_parameters(), lr=1e-4)

    def step() -> None:
        torch.manual_seed(0)
        loss = module.training_step(batch, 0)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        module.update_ema()

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r".*self\.log.*")
        flops, _ = count_flops(step)  # forward and backward; also the warm-up
        with PeakRSS() as memory:
            seconds = statistics.median(timings(step, repeats, warmup=0))
    module.eval()
    n = len(batch["caption"])
    frames = n * (batch["video"].shape[2] if "video" in batch else 1)
    return add_rates(
        result_row(
            "train",
            config,
            f"{stage} train step: batch {n}",
            time_s=seconds,
            flops=flops,
            per_frame_s=seconds / frames,
            mem_mb=memory.peak / MB,
            note="forward + backward + AdamW + EMA"
            + (", a random clip length (seeded)" if "video" in batch else ""),
        ),
        peak,
    )
