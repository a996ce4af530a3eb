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
"""

from __future__ import annotations

import argparse
import copy
import ctypes
import gc
import inspect
import json
import os
import platform
import resource
import statistics
import threading
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from unittest import mock

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.flop_counter import FlopCounterMode, sdpa_backward_flop_count, sdpa_flop_count

from keyframe.errors import UserError

CONFIG_DIR = Path(__file__).resolve().parents[1] / "configs"
DEFAULT_CONFIGS = ("tiny", "shapes")
DEFAULT_LENGTHS = (16, 32, 64, 128)
QUALITY_SAMPLERS = ("euler", "heun", "dpmpp_2m")
QUALITY_STEPS = (5, 10, 20, 25, 30, 50)  # 25 and 30: the shapes configs' sampling steps
QUALITY_TOLERANCES = (0.05, 0.01)  # sampler endpoint errors (of the data std) to report steps for
PROMPT = "a large red circle at the top left on a navy background"
CLIP_PROMPT = "a large red circle bounces to the left on a navy background"
MB = 2**20


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


# ---- measuring --------------------------------------------------------------------------------


def _flash_cpu_flops(query, key, value, *args, out_shape=None, **kwargs) -> int:
    return sdpa_flop_count(query, key, value)


def _flash_cpu_backward_flops(grad, query, key, value, *args, out_shape=None, **kwargs) -> int:
    return sdpa_backward_flop_count(grad, query, key, value)


# FlopCounterMode knows the GPU attention kernels only; SDPA on a CPU runs this one.
_CPU_ATTENTION_FLOPS = {
    torch.ops.aten._scaled_dot_product_flash_attention_for_cpu: _flash_cpu_flops,
    torch.ops.aten._scaled_dot_product_flash_attention_for_cpu_backward: _flash_cpu_backward_flops,
}


def count_flops(fn: Callable[[], Any]) -> tuple[int, Any]:
    """FLOPs of running fn() (2 per multiply-add; conv, matmul and attention ops) and its
    result. The ops really run, so this doubles as a warm-up."""
    with FlopCounterMode(display=False, custom_mapping=_CPU_ATTENTION_FLOPS) as counter:
        result = fn()
    return counter.get_total_flops(), result


def timings(fn: Callable[[], Any], repeats: int, warmup: int = 1) -> list[float]:
    """Wall-clock seconds of `repeats` calls of fn() after `warmup` untimed ones."""
    for _ in range(warmup):
        fn()
    out = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        out.append(time.perf_counter() - start)
    return out


def matmul_peak(size: int, repeats: int = 10) -> float:
    """The machine's fp32 matmul rate in GFLOP/s: the best of `repeats` size x size products."""
    a, b = torch.randn(size, size), torch.randn(size, size)
    out = torch.empty(size, size)
    best = min(timings(lambda: torch.mm(a, b, out=out), repeats, warmup=3))
    return 2 * size**3 / best / 1e9


_PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


def _rss() -> int | None:
    """Resident set size in bytes (Linux), else None."""
    try:
        with open("/proc/self/statm", "rb") as f:
            return int(f.read().split()[1]) * _PAGE
    except (OSError, ValueError, IndexError):
        return None


def _release_free_memory() -> None:
    """Collect garbage and hand freed heap pages back to the OS, so RSS is live memory."""
    gc.collect()
    with suppress(OSError, AttributeError):  # glibc only
        ctypes.CDLL(None).malloc_trim(0)


class PeakRSS:
    """Peak resident memory above its level at entry, in bytes (`.peak`), while the block runs.

    A thread samples /proc/self/statm every `interval` s (torch ops release the GIL, so it runs
    during them). Without /proc: getrusage's lifetime maximum rss growth, a lower bound.
    """

    def __init__(self, interval: float = 0.002):
        self.interval = interval
        self.peak = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def __enter__(self) -> PeakRSS:
        _release_free_memory()
        self._start = _rss()
        if self._start is None:
            self._start_max = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
            return self
        self._high = self._start
        self._thread = threading.Thread(target=self._watch, daemon=True)
        self._thread.start()
        return self

    def _watch(self) -> None:
        while not self._stop.wait(self.interval):
            self._high = max(self._high, _rss() or 0)

    def __exit__(self, *exc: Any) -> None:
        if self._thread is None:
            unit = 1 if platform.system() == "Darwin" else 1024  # bytes on macOS, KiB on Linux
            grown = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - self._start_max
            self.peak = grown * unit
            return
        self._stop.set()
        self._thread.join()
        self.peak = max(self._high, _rss() or 0) - self._start


@contextmanager
def net_calls(net: nn.Module) -> Iterator[dict[str, Any]]:
    """Record the batch size of every call of `net` and the seconds spent inside it."""
    record: dict[str, Any] = {"batches": [], "seconds": 0.0}
    started: list[float] = []

    def before(module, args, kwargs):
        record["batches"].append(int(args[0].shape[0]))
        started.append(time.perf_counter())

    def after(module, args, kwargs, output):
        record["seconds"] += time.perf_counter() - started.pop()

    handles = [
        net.register_forward_pre_hook(before, with_kwargs=True),
        net.register_forward_hook(after, with_kwargs=True),
    ]
    try:
        yield record
    finally:
        for handle in handles:
            handle.remove()


class _TextbookAttention:
    """torch.nn.functional with scaled_dot_product_attention written out: the score matrix
    materialised, softmax, matmul (the straightforward implementation of the baseline)."""

    def __getattr__(self, name: str) -> Any:
        return getattr(F, name)

    @staticmethod
    def scaled_dot_product_attention(q, k, v, attn_mask=None, scale=None) -> torch.Tensor:
        scores = (q @ k.transpose(-2, -1)) * (q.shape[-1] ** -0.5 if scale is None else scale)
        if attn_mask is not None:
            scores = scores + attn_mask
        return scores.softmax(dim=-1) @ v


@contextmanager
def attention_variant(kind: str) -> Iterator[None]:
    """'sdpa' (as shipped: fused kernel), 'math' (SDPA's unfused math kernel) or 'textbook'."""
    import keyframe.layers

    if kind == "sdpa":
        yield
    elif kind == "math":
        with sdpa_kernel(SDPBackend.MATH):
            yield
    elif kind == "textbook":
        with mock.patch.object(keyframe.layers, "F", _TextbookAttention()):
            yield
    else:
        raise ValueError(f"unknown attention variant {kind!r}")


# ---- building models from configs -------------------------------------------------------------


def _config_path(stage: str, name: str) -> Path:
    path = CONFIG_DIR / stage / f"{name}.yaml"
    if not path.is_file():
        known = sorted(p.stem for p in (CONFIG_DIR / stage).glob("*.yaml"))
        raise UserError(
            f"--configs: no {stage} config {name!r} ({path}); known: {', '.join(known) or 'none'}"
        )
    return path


def read_config(stage: str, name: str) -> dict[str, Any]:
    """The resolved YAML of configs/STAGE/NAME.yaml as plain dicts."""
    from omegaconf import OmegaConf

    path = _config_path(stage, name)
    try:
        config = OmegaConf.to_container(OmegaConf.load(path), resolve=True)
    except Exception as err:
        raise UserError(f"{path}: unreadable config ({err})") from None
    if not isinstance(config, dict) or not isinstance(config.get("model"), dict):
        raise UserError(f"{path}: expected a `model:` section")
    return config


def _model_arguments(config: dict[str, Any], cls: type) -> dict[str, Any]:
    """The config's model section plus the values LightningCLI links from `data:`."""
    model = dict(config["model"])
    data = config.get("data") or {}
    names = inspect.signature(cls).parameters
    if "image_size" in names and "size" in data:
        model.setdefault("image_size", data["size"])
    if "num_frames" in names and "num_frames" in data:
        model.setdefault("num_frames", data["num_frames"])
    return model


def _autoencoder(name: str, reference: str):
    """Pixel space for 'identity'; otherwise configs/autoencoder/NAME.yaml with random weights."""
    from keyframe.autoencoder import FrameAutoencoder, IdentityAutoencoder

    if reference == "identity":
        return IdentityAutoencoder()
    model = read_config("autoencoder", name)["model"]
    names = inspect.signature(FrameAutoencoder).parameters
    return FrameAutoencoder(**{k: v for k, v in model.items() if k in names}).eval()


def build_keyframe(name: str):
    """KeyframeModule of configs/keyframe/NAME.yaml, random weights, eval mode."""
    from keyframe.module import KeyframeModule, prebuilt_autoencoder

    config = read_config("keyframe", name)
    arguments = _model_arguments(config, KeyframeModule)
    with prebuilt_autoencoder(_autoencoder(name, arguments.get("autoencoder", "identity"))):
        return KeyframeModule(**arguments).eval(), config


def build_interpolate(name: str):
    """InterpolateModule of configs/interpolate/NAME.yaml, random weights, eval mode."""
    from interpolate.module import InterpolateModule
    from keyframe.module import prebuilt_autoencoder

    config = read_config("interpolate", name)
    arguments = _model_arguments(config, InterpolateModule)
    arguments["init_from"] = None
    with prebuilt_autoencoder(_autoencoder(name, arguments.get("autoencoder", "identity"))):
        return InterpolateModule(**arguments).eval(), config


# ---- the measurements -------------------------------------------------------------------------


def _row(section: str, config: str, what: str, **values: Any) -> dict[str, Any]:
    return {"section": section, "config": config, "what": what, **values}


def _rates(row: dict[str, Any], peak: float) -> dict[str, Any]:
    """Add GFLOP/s and MFU to a row holding time_s and flops."""
    flops, seconds = row.get("flops"), row.get("time_s")
    if flops and seconds:
        row["gflops"] = flops / seconds / 1e9
        row["mfu"] = row["gflops"] / peak
    return row


def _keyframe_inputs(module, images: int) -> tuple[torch.Tensor, torch.Tensor, dict]:
    """One guided sampling step's network input: [uncond; cond] latents, sigmas, text."""
    h, w = module.latent_size()
    x = torch.randn(2 * images, module.latent_channels, h, w)
    sigma = torch.full((2 * images,), 1.0)
    with torch.no_grad():
        cond = module.encode_text([""] * images + [PROMPT] * images, ema=True)
    return x, sigma, cond


def _tween_inputs(module, frames: int) -> tuple[torch.Tensor, torch.Tensor, dict]:
    """One sampling step of a window with keys at both ends: the video network's input."""
    size = module.hparams.image_size // module.autoencoder.factor
    x = torch.randn(1, module.latent_channels, frames, size, size)
    mask = torch.zeros(1, 1, frames, 1, 1)
    mask[:, :, [0, -1]] = 1
    cond: dict[str, Any] = {"known": x * mask, "mask": mask}
    if module.hparams.fps_conditioning:
        cond["fps"] = torch.tensor([24.0])
    if module.text is not None:
        with torch.no_grad():
            cond.update(module.encode_text([CLIP_PROMPT], ema=True))
    return x, torch.tensor([1.0]), cond


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
    from keyframe.diffusion import Denoiser

    x, sigma, cond = inputs

    def run(model: nn.Module, channels_last: bool = False) -> Callable[[], Any]:
        # A video net folds frames into the batch itself; its weights are what changes format.
        if channels_last and x.ndim == 4:
            xin = x.contiguous(memory_format=torch.channels_last)
        else:
            xin = x
        return lambda: model(xin, sigma, **cond)

    def median(fn: Callable[[], Any]) -> float:
        with torch.no_grad():
            return statistics.median(timings(fn, plan.repeats, plan.warmup))

    with torch.no_grad():
        flops, _ = count_flops(run(denoiser))
    base_time = median(run(denoiser))
    rows = [
        _rates(
            _row(
                "forward",
                config,
                label,
                time_s=base_time,
                flops=flops,
                per_frame_s=base_time / frames,
                note="fused SDPA attention (as shipped)",
            ),
            peak,
        )
    ]

    def variant(what: str, seconds: float, note: str) -> None:
        row = _row("forward", config, f"  {what}", time_s=seconds, flops=flops)
        row["ratio"] = seconds / base_time
        row["note"] = note
        rows.append(_rates(row, peak))

    for kind, note in (
        ("textbook", "baseline: attention written out (scores, softmax, matmul)"),
        ("math", "baseline: SDPA math kernel (unfused)"),
    ):
        with attention_variant(kind):
            variant(f"{kind} attention", median(run(denoiser)), note)

    net = copy.deepcopy(denoiser.net).to(memory_format=torch.channels_last)
    last = Denoiser(net, denoiser.sigma_data)
    seconds = median(run(last, channels_last=True))
    variant(
        "channels_last",
        seconds,
        "faster: worth switching on"
        if seconds < base_time * 0.95
        else "not faster here: leave off",
    )

    if compile_net:
        compiled = Denoiser(torch.compile(copy.deepcopy(denoiser.net)), denoiser.sigma_data)
        start = time.perf_counter()
        try:
            with torch.no_grad():
                run(compiled)()
        except Exception as err:  # no C++ compiler, an unsupported op: report, carry on
            rows.append(_row("forward", config, "  torch.compile", note=f"failed: {err}"[:200]))
            return rows
        first = time.perf_counter() - start
        variant("torch.compile", median(run(compiled)), f"first call (compiling) {first:.1f} s")
    return rows


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
    row = _row(
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
    return _rates(row, peak)


def _keys(module) -> torch.Tensor:
    size = module.hparams.image_size
    return torch.rand(2, 3, size, size, generator=torch.Generator().manual_seed(0)) * 2 - 1


def run_tween(module, length: int, steps: int) -> int:
    """Stream a tween of `length` frames between two keys, dropping frames as they come out
    (as a video writer would); returns the frame count."""
    from interpolate.inbetween import interpolate_frames

    prompt = CLIP_PROMPT if module.text is not None else None
    frames = interpolate_frames(
        module, _keys(module), [0, length - 1], length, steps=steps, seed=0, prompt=prompt
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
        row = _row(
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
        rows.append(_rates(row, peak))
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


def _train_batch(
    module, config: dict[str, Any], max_frames: int | None, video: bool
) -> dict[str, Any]:
    """Random pixels at the config's data.batch_size (cut to `max_frames` frames if given)."""
    batch = int((config.get("data") or {}).get("batch_size", 4))
    frames = module.hparams.num_frames if video else 1
    if max_frames is not None:
        batch = max(1, min(batch, max_frames // frames))
    size = module.hparams.image_size
    g = torch.Generator().manual_seed(0)
    if video:
        pixels = torch.rand(batch, 3, frames, size, size, generator=g) * 2 - 1
        return {
            "video": pixels,
            "caption": [CLIP_PROMPT] * batch,
            "fps": torch.full((batch,), 24.0),
        }
    pixels = torch.rand(batch, 3, size, size, generator=g) * 2 - 1
    return {"image": pixels, "caption": [PROMPT] * batch}


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
    return _rates(
        _row(
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


# ---- sampler quality on an exact Gaussian denoiser --------------------------------------------

# tests/test_sampling.py's data: x0 ~ N(MU, STD^2) per dimension, so E[x0 | x] is exact.
GAUSS_MU = torch.tensor([1.0, -0.5, 0.3, 0.0])
GAUSS_STD = torch.tensor([0.5, 0.2, 1.0, 0.05])


def _gaussian_denoise(x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    s2 = GAUSS_STD**2
    return GAUSS_MU + s2 / (s2 + sigma[:, None] ** 2) * (x - GAUSS_MU)


def sampler_quality(
    samplers: Sequence[str] = QUALITY_SAMPLERS,
    steps: Sequence[int] = QUALITY_STEPS,
    n: int = 4096,
    sigma_max: float = 80.0,
) -> list[dict[str, Any]]:
    """Each sampler's error at each step count against the exact solution of the probability
    flow ODE for Gaussian data (x0 = MU + (x_T - MU) * STD / sqrt(STD^2 + sigma_max^2)).

    `ode_error`: RMS distance to that solution over STD (discretisation error alone);
    `std_error` / `mean_error`: worst relative error of the samples' std / mean (the
    distribution the test suite checks). A proxy: trained models are not Gaussian.
    """
    from keyframe.sampling import sample

    noise = torch.randn(n, 4, generator=torch.Generator().manual_seed(0))
    x_t = noise * sigma_max
    exact = GAUSS_MU + (x_t - GAUSS_MU) * GAUSS_STD / (GAUSS_STD**2 + sigma_max**2).sqrt()
    rows = []
    for name in samplers:
        for count in steps:
            calls: list[int] = []

            def denoise(x, sigma, calls=calls):
                calls.append(1)
                return _gaussian_denoise(x, sigma)

            out = sample(denoise, noise.clone(), count, sampler=name, sigma_max=sigma_max)
            rows.append(
                {
                    "section": "samplers",
                    "sampler": name,
                    "steps": count,
                    "nfe": len(calls),
                    "ode_error": float((((out - exact) / GAUSS_STD) ** 2).mean().sqrt()),
                    "std_error": float((out.std(0) / GAUSS_STD - 1).abs().max()),
                    "mean_error": float(((out.mean(0) - GAUSS_MU) / GAUSS_STD).abs().max()),
                }
            )
    return rows


def fewest_steps(rows: Sequence[dict[str, Any]], tolerance: float) -> dict[str, Any]:
    """Per sampler: the fewest measured steps (and NFE) with ode_error under `tolerance`."""
    best: dict[str, Any] = {}
    for row in sorted(rows, key=lambda r: r["steps"]):
        if row["ode_error"] < tolerance and row["sampler"] not in best:
            best[row["sampler"]] = {"steps": row["steps"], "nfe": row["nfe"]}
    return best


# ---- profile ----------------------------------------------------------------------------------

_CATEGORIES = (  # substrings of aten op names, first match wins
    ("attention", "scaled_dot_product flash_attention softmax".split()),
    ("conv", ["conv"]),
    ("matmul", "addmm ::mm bmm matmul linear".split()),
    ("norm", "group_norm layer_norm".split()),
    ("copy/layout", "copy_ ::cat clone contiguous ::to _to_copy ::stack pad gather index".split()),
)


def op_category(name: str) -> str:
    """Which kind of work an aten op is: attention, conv, matmul, norm, copy/layout, elementwise."""
    for category, patterns in _CATEGORIES:
        if any(p in name for p in patterns):
            return category
    return "elementwise/other"


@contextmanager
def _quiet_stderr() -> Iterator[None]:
    """Silence the profiler library's C++ start/stop lines on file descriptor 2."""
    try:
        saved = os.dup(2)
    except OSError:
        yield
        return
    try:
        with open(os.devnull, "w") as devnull:
            os.dup2(devnull.fileno(), 2)
            yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def profile_ops(fn: Callable[[], Any], top: int = 10) -> dict[str, Any]:
    """Self CPU time of fn() per op (torch.profiler), grouped into categories, and the top ops."""
    from torch.profiler import ProfilerActivity, profile

    with _quiet_stderr(), profile(activities=[ProfilerActivity.CPU]) as prof:
        fn()
    events = [e for e in prof.key_averages() if e.self_cpu_time_total > 0]
    total = sum(e.self_cpu_time_total for e in events) or 1
    categories: dict[str, float] = {}
    for e in events:
        key = op_category(e.key)
        categories[key] = categories.get(key, 0.0) + e.self_cpu_time_total / total
    ranked = sorted(events, key=lambda e: e.self_cpu_time_total, reverse=True)[:top]
    return {
        "total_ms": total / 1000,
        "categories": dict(sorted(categories.items(), key=lambda kv: -kv[1])),
        "top_ops": [
            {
                "op": e.key,
                "category": op_category(e.key),
                "self_ms": e.self_cpu_time_total / 1000,
                "share": e.self_cpu_time_total / total,
                "calls": e.count,
            }
            for e in ranked
        ],
    }


# ---- the command ------------------------------------------------------------------------------


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


def add_arguments(parser: argparse.ArgumentParser) -> None:
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
    parser.add_argument("--out", type=Path, default=None, metavar="JSON", help="write all results")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing --out file")


def _machine(threads: int) -> dict[str, Any]:
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return {
        "cpu": cpu,
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "logical_cpus": os.cpu_count(),
        "threads": threads,
        "interop_threads": torch.get_num_interop_threads(),
        "torch": torch.__version__,
        "dtype": "float32",
    }


def run_bench(args: argparse.Namespace, log: Callable[[str], None] = print) -> dict[str, Any]:
    """Every measurement; `log` gets progress lines. Returns the report (rows, doubling
    verdicts, sampler table, profiles)."""
    plan = QUICK if args.quick else FULL
    threads = torch.get_num_threads()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    for name in args.configs:  # all configs exist before anything long runs
        for stage in ("keyframe", "interpolate"):
            _config_path(stage, name)
    try:
        report: dict[str, Any] = {"machine": _machine(args.threads), "quick": args.quick}
        peak = matmul_peak(plan.peak_size)
        report["peak_gflops"] = peak
        rows = [
            _row(
                "peak",
                "-",
                f"fp32 matmul {plan.peak_size}x{plan.peak_size}",
                gflops=peak,
                mfu=1.0,
                note="best of 10: the MFU denominator",
            )
        ]
        log(f"matmul peak: {peak:.1f} GFLOP/s ({args.threads} threads)")
        report["doubling"], report["profiles"] = {}, {}
        for name in args.configs:
            rows += _bench_config(name, args, plan, peak, report, log)
        report["rows"] = rows
        log("samplers on an exact Gaussian denoiser")
        report["samplers"] = sampler_quality()
        report["fewest_steps"] = {
            f"{tol:g}": fewest_steps(report["samplers"], tol) for tol in QUALITY_TOLERANCES
        }
        report["method"] = {
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
    rows: list[dict[str, Any]] = []
    keyframe, key_config = build_keyframe(name)
    images = args.images
    log(f"[{name}] keyframe U-Net forward")
    rows += bench_forward(
        name,
        f"keyframe U-Net forward: batch {2 * images} (cfg)",
        keyframe.sampling_denoiser(),
        _keyframe_inputs(keyframe, images),
        plan,
        peak,
        2 * images,
        args.compile,
    )
    key_steps = args.steps or plan.sample_steps or keyframe.hparams.sample_steps
    log(f"[{name}] keyframe sample")
    rows.append(bench_keyframe_sample(name, keyframe, images, key_steps, peak))

    tween, tween_config = build_interpolate(name)
    window = tween.hparams.num_frames
    log(f"[{name}] tween U-Net forward")
    rows += bench_forward(
        name,
        f"tween U-Net forward: 1 x {window} frames",
        tween.sampling_denoiser(),
        _tween_inputs(tween, window),
        plan,
        peak,
        window,
        args.compile,
    )
    tween_steps = args.steps or plan.tween_steps or tween.hparams.sample_steps
    log(f"[{name}] tweens of {', '.join(map(str, args.tween_lengths))} frames")
    doubling = bench_tween(name, tween, args.tween_lengths, tween_steps, peak)
    rows += doubling
    report["doubling"][name] = doubling_verdict(doubling)

    log(f"[{name}] profile of sampling")
    profile_steps = min(plan.profile_steps, key_steps)
    report["profiles"][name] = {
        "keyframe_sample": profile_ops(
            lambda: keyframe.sample([PROMPT] * images, steps=profile_steps, seed=0)
        ),
        "tween": profile_ops(
            lambda: run_tween(tween, window, min(plan.profile_steps, tween_steps))
        ),
    }
    if not args.no_train:
        log(f"[{name}] training steps")
        batch = _train_batch(keyframe, key_config, plan.train_frames, video=False)
        rows.append(bench_train_step(name, "keyframe", keyframe, batch, plan.train_repeats, peak))
        batch = _train_batch(tween, tween_config, plan.train_frames, video=True)
        rows.append(bench_train_step(name, "interpolate", tween, batch, plan.train_repeats, peak))
    return rows


# ---- printing ---------------------------------------------------------------------------------


def _cell(row: dict[str, Any], key: str, spec: str, scale: float = 1.0) -> str:
    value = row.get(key)
    if value is None:
        return "-"
    return f"{value:.0%}" if spec == "%" else format(value * scale, spec)


_COLUMNS: tuple[tuple[str, str, Callable[[dict[str, Any]], str]], ...] = (
    ("config", "<7", lambda r: r["config"]),
    ("what", "<42", lambda r: r["what"][:42]),
    ("ms", ">9", lambda r: _cell(r, "time_s", ".1f", 1e3)),
    ("GFLOP", ">8", lambda r: _cell(r, "flops", ".2f", 1e-9)),
    ("GFLOP/s", ">7", lambda r: _cell(r, "gflops", ".1f")),
    ("MFU", ">4", lambda r: _cell(r, "mfu", "%")),
    ("x base", ">6", lambda r: _cell(r, "ratio", ".2f")),
    ("peak MB", ">7", lambda r: _cell(r, "mem_mb", ".0f")),
    ("ms/frame", ">8", lambda r: _cell(r, "per_frame_s", ".1f", 1e3)),
    ("note", "", lambda r: r.get("note", "")),
)


def format_table(rows: Sequence[dict[str, Any]]) -> list[str]:
    """The measurement rows as aligned text lines, a header first."""
    return [
        " ".join(format(title, spec) for title, spec, _ in _COLUMNS).rstrip(),
        *(" ".join(format(cell(r), spec) for _, spec, cell in _COLUMNS).rstrip() for r in rows),
    ]


def format_report(report: dict[str, Any]) -> str:
    """The report as text: measurements, growth with tween length, samplers, profiles."""
    m = report["machine"]
    lines = [
        f"animatic bench{' --quick' if report['quick'] else ''}: {m['cpu']} "
        f"({m['cpu_capability']}), {m['threads']} threads, torch {m['torch']}, float32",
        f"fp32 matmul peak: {report['peak_gflops']:.1f} GFLOP/s; MFU = model GFLOP/s / peak; "
        "x base = time / the shipped forward's time;",
        "peak MB = peak RSS above the block's start (/proc/self/statm every 2 ms, after gc and "
        "malloc_trim); random weights",
        "",
        *format_table([r for r in report["rows"] if r["section"] != "peak"]),
    ]
    for name, d in report["doubling"].items():
        times = ", ".join(f"x{r:.2f}" for r in d["time_ratios"])
        calls = ", ".join(f"{t:.0f}" for t in d["ms_per_net_call"])
        memory = ", ".join(f"{v:.0f}" for v in d["mem_mb"])
        span = d["lengths"][-1] / d["lengths"][0]
        lines += [
            "",
            f"[{name}] tween length {' -> '.join(map(str, d['lengths']))} frames:",
            f"  time {times} per step: {'linear' if d['time_linear'] else 'NOT linear'} "
            f"(ms per network call: {calls})",
            f"  peak MB {memory}: {'flat' if d['memory_flat'] else 'GROWS'} "
            f"(max/min {d['mem_max_over_min']:.2f} over {span:g}x the length)",
        ]
    lines += [
        "",
        "samplers on an exact Gaussian denoiser (error of the result vs the exact ODE solution,",
        "and of the samples' std and mean, relative to the data std):",
        f"  {'sampler':<9} {'steps':>5} {'NFE':>4} {'ODE err':>8} {'std err':>8} {'mean err':>8}",
    ]
    for r in report["samplers"]:
        lines.append(
            f"  {r['sampler']:<9} {r['steps']:>5} {r['nfe']:>4} {r['ode_error']:>8.4f} "
            f"{r['std_error']:>8.4f} {r['mean_error']:>8.4f}"
        )
    for tolerance, samplers in report["fewest_steps"].items():
        best = ", ".join(f"{k} {v['steps']} ({v['nfe']} NFE)" for k, v in samplers.items())
        lines.append(f"  fewest steps under {float(tolerance):.0%} ODE error: {best or 'none'}")
    for name, profiles in report["profiles"].items():
        for what, p in profiles.items():
            shares = ", ".join(f"{k} {v:.0%}" for k, v in p["categories"].items())
            lines += ["", f"[{name}] profile of {what}, {p['total_ms']:.0f} ms self CPU: {shares}"]
            for op in p["top_ops"]:
                lines.append(
                    f"  {op['op'][:48]:<48} {op['category']:<17} {op['self_ms']:>8.1f} ms "
                    f"{op['share']:>4.0%} {op['calls']:>7} calls"
                )
    notes = bottleneck_notes(report)
    return "\n".join([*lines, "", *notes] if notes else lines)


def bottleneck_notes(report: dict[str, Any]) -> list[str]:
    """For each sampling row: its MFU and, below 50%, what its profile says bounds it."""
    notes = []
    for r in report["rows"]:
        if r["section"] not in ("sample", "tween") or r.get("mfu") is None:
            continue
        head = f"[{r['config']}] {r['what']}: MFU {r['mfu']:.0%}"
        if r["mfu"] >= 0.5:
            notes.append(f"{head} (>= 50%)")
            continue
        key = "keyframe_sample" if r["section"] == "sample" else "tween"
        shares = report["profiles"].get(r["config"], {}).get(key, {}).get("categories", {})
        flop_work = sum(shares.get(k, 0.0) for k in ("conv", "matmul", "attention"))
        notes.append(
            f"{head} (< 50%): {flop_work:.0%} of op time in conv/matmul/attention, the rest in "
            f"norms, copies and elementwise ops (no FLOPs counted); "
            f"{r.get('net_share', 0):.0%} of the wall time inside the network"
        )
    return notes


def run(args: argparse.Namespace) -> int:
    from pipeline.io import atomic_path, check_writable, provenance

    if args.out is not None:
        check_writable(args.out, args.overwrite)
    start = time.perf_counter()

    def log(line: str) -> None:
        print(f"[{time.perf_counter() - start:6.1f} s] {line}", flush=True)

    if args.general:
        from pipeline.bench_general import bench_general

        try:
            width, height = (int(v) for v in args.general_size.lower().split("x"))
        except ValueError:
            raise UserError(
                f"--general-size {args.general_size}: expected WxH, e.g. 1280x720"
            ) from None
        torch.set_num_threads(args.threads)
        rows = bench_general(args.general, (height, width), log=log)
        report = {"machine": _machine(args.threads), "general": rows}
    elif args.pipeline:
        from pipeline.bench_pipeline import bench_pipeline

        rows = bench_pipeline(
            args.keyframe_model, args.tween_model, args.repeats, args.threads, log
        )
        report = {"machine": _machine(args.threads), "pipeline": rows}
        for row in rows:
            runs = ", ".join(f"{s:.1f}" for s in row["runs_s"])
            print(f"  {row['what']:70s} median {row['median_s']:6.1f} s  ({runs})")
    else:
        report = run_bench(args, log)
        print(format_report(report))
    if args.out is not None:
        text = json.dumps({**report, "provenance": provenance()}, indent=2)
        with atomic_path(args.out) as tmp:
            tmp.write_text(text + "\n", encoding="utf-8")
        print(f"wrote {args.out}")
    return 0
