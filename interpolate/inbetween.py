"""In-betweening: keys at chosen frame numbers in, every frame of the sequence out.

A sequence longer than the model's trained window is sampled window by window (`plan_windows`):
neighbouring keys that fit in one window share it; a window takes the last frames already made
before it as extra known context, so motion runs on smoothly across keys; a gap too long for one
window first gets evenly spaced anchor frames at a coarser frame rate (one window, fps conditioned
on the wider spacing), and the frames between anchors are filled afterwards (coarse to fine, as
NUWA-XL and hierarchical video diffusion do). Frames stream out in order as soon as they are final,
and latents are dropped once no later window needs them, so memory stays flat in the length.

Within a window the known latents condition the network and also replace the known frames of every
x0 prediction; the key frames of the output are the given key pixels, written back exactly.
Each window draws its noise from (seed, window index) alone.

With init "flow" a window does not start from pure noise: its unknown frames start as the
optical-flow in-betweens of the keys along curved motion paths (interpolate.paths), noised to
`init_sigma`, and the model refines them (SDEdit). Flow keeps each object's look and a path
through the keys; the model removes flow's double images and tears.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from interpolate.flow import check_init
from interpolate.paths import PathFrames
from keyframe.errors import UserError
from keyframe.pixels import from_uint8, to_uint8
from keyframe.sampling_options import check_sampling_options, sampling_defaults, with_defaults

Callback = Callable[[dict[str, Any]], None]


@dataclass(frozen=True)
class Window:
    """One network run: the timeline frames it covers (increasing), their mean spacing in frames
    (1 for consecutive frames; more for coarse anchors), and which of them it generates."""

    index: int
    positions: tuple[int, ...]
    stride: float
    generate: tuple[int, ...]


def check_timing(positions: Sequence[int], num_frames: int) -> list[int]:
    """Key frame numbers as a list of ints: strictly increasing, inside 0..num_frames-1."""
    positions = [int(p) for p in positions]
    if not positions:
        raise UserError("timing: expected at least one key")
    if any(b <= a for a, b in zip(positions, positions[1:], strict=False)):
        raise UserError(f"timing {positions}: key frame numbers must be strictly increasing")
    if positions[0] < 0 or positions[-1] >= num_frames:
        raise UserError(
            f"timing {positions}: key frame numbers must lie in 0..{num_frames - 1} "
            f"for a {num_frames}-frame sequence"
        )
    return positions


def plan_windows(
    keys: Sequence[int], num_frames: int, window: int, context: int = 2
) -> list[Window]:
    """The windows that make every frame of a `num_frames` sequence with keys at `keys`.

    Windows hold at most `window` frames and run in order; each generates the frames it covers that
    are not known yet (keys or made by an earlier window). `context` caps how many known frames
    before a gap a window takes along.
    """
    keys = check_timing(keys, num_frames)
    if window < 3:
        raise UserError(f"window: expected at least 3 frames, got {window}")
    context = max(0, int(context))
    known = set(keys)
    windows: list[Window] = []
    while len(known) < num_frames:
        if num_frames <= window:
            positions, stride = range(num_frames), 1.0
        else:
            positions, stride = _next_window(known, num_frames, window, context)
        positions = tuple(sorted(set(positions)))
        generate = tuple(p for p in positions if p not in known)
        if not generate:
            raise RuntimeError(f"window plan stalled at {positions}")  # a bug, never input
        windows.append(Window(len(windows), positions, stride, generate))
        known.update(generate)
    return windows


def _next_window(
    known: set[int], num_frames: int, window: int, context: int
) -> tuple[Sequence[int], float]:
    """The frames (and their spacing) of the window that fills the first frame not yet known."""
    cursor = next(p for p in range(num_frames) if p not in known)
    right = min((p for p in known if p > cursor), default=None)
    if cursor == 0:
        # Frames before the first key: a window ending at the key (filled right to left).
        if right < window:
            last = max(p for p in known if p < window)
            return range(last + 1), 1.0
        return range(right - window + 1, right + 1), 1.0
    if right is None:
        # After the last key: extension, led by the last frames made.
        lead = min(cursor, max(context, 1), window - 1)
        return range(cursor - lead, min(num_frames, cursor - lead + window)), 1.0
    start = cursor - 1
    if right - cursor + 2 <= window:
        # The gap fits: take every later key that fits too, then context before the gap.
        last = max(p for p in known if p <= start + window - 1)
        lead = min(context, start, window - (last - start + 1))
        return range(start - lead, last + 1), 1.0
    # A long gap: evenly spaced anchors first, at the coarser spacing.
    pieces = min(math.ceil((right - start) / max(window - 1 - context, 1)), window - 1)
    stride = (right - start) / pieces
    anchors = [start + round(i * stride) for i in range(pieces + 1)]
    lead = min(context, window - len(anchors))
    before = [start - round(j * stride) for j in range(1, lead + 1)]
    return [p for p in before if p >= 0] + anchors, stride


def window_seed(seed: int, index: int) -> int:
    """A 63-bit seed for window `index`, from (seed, index) only."""
    state = np.random.SeedSequence([int(seed) & (2**63 - 1), index]).generate_state(1, np.uint64)
    return int(state[0]) & (2**63 - 1)


def _last_use(windows: Sequence[Window], num_frames: int) -> list[int]:
    """For each frame, the index of the last window that reads or writes it."""
    last = [-1] * num_frames
    for w in windows:
        for p in w.positions:
            last[p] = w.index
    return last


def _stack_keys(keys) -> torch.Tensor:
    if isinstance(keys, torch.Tensor):
        if keys.ndim != 4:
            raise UserError(f"keys: expected a (k, c, h, w) tensor, got shape {tuple(keys.shape)}")
        return keys
    keys = list(keys)
    if not keys:
        raise UserError("keys: expected at least one key image")
    shapes = {tuple(k.shape) for k in keys}
    if len(shapes) != 1:
        raise UserError(f"keys: all keys must have the same shape, got {sorted(shapes)}")
    return torch.stack(list(keys))


def interpolate_frames(
    model,
    keys,
    positions: Sequence[int],
    num_frames: int,
    steps: int | None = None,
    guidance: float | None = None,
    seed: int = 0,
    sampler: str | None = None,
    prompt: str | None = None,
    fps: float | None = None,
    callback: Callback | None = None,
    window: int | None = None,
    context: int | None = None,
    init: str | None = None,
    init_sigma: float | None = None,
    motion: bool = True,
) -> Iterator[torch.Tensor]:
    """Stream the frames (c, h, w) on the CPU in [-1, 1], in order; see `interpolate`.

    Arguments are checked (and keys encoded) at the call, before any frame is asked for.
    """
    check_sampling_options(steps, guidance, sampler)
    pipe = model.pipeline() if hasattr(model, "pipeline") else model  # a trainer: its EMA
    model, config = pipe.model, pipe.config
    keys = _stack_keys(keys).float()
    positions = check_timing(positions, num_frames)
    if len(positions) != keys.shape[0]:
        raise UserError(f"timing: {len(positions)} frame numbers for {keys.shape[0]} keys")
    window = config.num_frames if window is None else window
    context = config.context_frames if context is None else context
    fps = float(config.sample_fps if fps is None else fps)
    if not (math.isfinite(fps) and fps > 0):
        raise UserError(f"fps: expected a positive frame rate, got {fps}")
    windows = plan_windows(positions, num_frames, window, context)
    chosen = with_defaults(sampling_defaults(config), steps=steps, sampler=sampler)
    steps, sampler = chosen["steps"], chosen["sampler"]
    cond = model.sampling_conditions(prompt, guidance)  # guidance None: the model's, too
    init = config.sample_init if init is None else init
    init_sigma = config.sample_init_sigma if init_sigma is None else init_sigma
    check_init(init, init_sigma)
    latents = dict(zip(positions, model.encode_frames(keys).unbind(0), strict=True))
    key_at = dict(zip(positions, keys.cpu(), strict=True))
    prior = pipe.motion_prior if motion else None
    flow = PathFrames(to_uint8(keys), positions, prior, fps) if init == "flow" else None
    options = {"steps": steps, "sampler": sampler, "seed": seed, "fps": fps, "callback": callback}
    return _stream(
        model, windows, num_frames, key_at, latents, cond, flow=flow, init_sigma=init_sigma,
        **options,
    )  # fmt: skip


@torch.no_grad()
def _stream(
    model,
    windows: Sequence[Window],
    num_frames: int,
    key_at: dict[int, torch.Tensor],
    latents: dict[int, torch.Tensor],
    cond: dict[str, Any],
    steps: int,
    sampler: str,
    seed: int,
    fps: float,
    callback: Callback | None,
    flow: PathFrames | None = None,
    init_sigma: float | None = None,
) -> Iterator[torch.Tensor]:
    """Run the windows in order, yielding each frame as soon as it and all before it are made;
    a latent is dropped after the last window that uses it. With `flow`, each window refines the
    flow in-betweens at its frames from noise level `init_sigma`."""
    last_use = _last_use(windows, num_frames)
    pixels: dict[int, torch.Tensor] = {}
    emitted = 0
    for w in [*windows, None]:
        # 1. yield every frame that is made, in order
        while emitted < num_frames and (emitted in pixels or emitted in key_at):
            yield key_at[emitted] if emitted in key_at else pixels.pop(emitted)
            emitted += 1
        if w is None:
            break

        def report(info: dict, w: Window = w) -> None:
            if callback is not None:
                callback({**info, "window": w.index, "windows": len(windows)})

        # 2. sample the window, 3. keep its new latents and frames
        made = _sample_window(
            model, w, latents, cond, steps, sampler, seed, fps, report, flow, init_sigma
        )
        for p, (latent, frame) in made.items():
            latents[p] = latent
            pixels[p] = frame
        # 4. drop the latents no later window reads
        for p in list(latents):
            if last_use[p] <= w.index:
                del latents[p]
    if emitted != num_frames:
        raise RuntimeError(f"window plan left frame {emitted} unmade")


@torch.no_grad()
def _sample_window(
    model,
    w: Window,
    latents: dict[int, torch.Tensor],
    cond: dict[str, Any],
    steps: int,
    sampler: str,
    seed: int,
    fps: float,
    report: Callback,
    flow: PathFrames | None,
    init_sigma: float | None,
) -> dict[int, tuple[torch.Tensor, torch.Tensor]]:
    """One network run over window `w` (its frame rate `fps` over its stride, its noise from
    (seed, index)): {position: (latent, decoded frame)} for each frame it generates."""
    known = [p not in w.generate for p in w.positions]
    generator = torch.Generator().manual_seed(window_seed(seed, w.index))
    init = None
    if flow is not None:
        init = model.encode_frames(from_uint8(np.stack([flow(p) for p in w.positions])))
    out = model.sample_window(
        [latents.get(p) for p in w.positions],
        known,
        cond,
        steps=steps,
        sampler=sampler,
        fps=fps / w.stride,
        generator=generator,
        callback=report,
        init=init,
        init_sigma=init_sigma,
    )
    made = [i for i, k in enumerate(known) if not k]
    decoded = model.decode_frames(out[made]) if made else []
    return {w.positions[i]: (out[i], frame) for i, frame in zip(made, decoded, strict=True)}


def interpolate(
    model,
    keys,
    positions: Sequence[int],
    num_frames: int,
    steps: int | None = None,
    guidance: float | None = None,
    seed: int = 0,
    sampler: str | None = None,
    prompt: str | None = None,
    fps: float | None = None,
    callback: Callback | None = None,
    window: int | None = None,
    context: int | None = None,
    init: str | None = None,
    init_sigma: float | None = None,
    motion: bool = True,
) -> torch.Tensor:
    """The full sequence `c f h w` in [-1, 1] (CPU) with the keys exactly in place.

    `model` is an InterpolatePipeline (a trainer samples with its EMA weights); `keys` are
    (k, c, h, w) images in [-1, 1] at a size the model takes; `positions` their frame numbers
    (strictly increasing) in a `num_frames` sequence.
    steps, guidance (text classifier-free guidance scale), sampler, window (frames per network
    run) and context (known frames carried into the next window) default to the model's.
    `fps` is the frame rate of the sequence (for frame-rate conditioned models). `callback` gets
    the sampler's per-step dict plus "window" and "windows". `init` ("noise" or "flow") and
    `init_sigma` choose where sampling starts (model defaults: sample_init, sample_init_sigma);
    `motion` False ignores the pipeline's motion prior plug-in (flow init then uses parabolic
    paths).
    """
    frames = interpolate_frames(
        model, keys, positions, num_frames, steps, guidance, seed, sampler, prompt, fps,
        callback, window, context, init, init_sigma, motion,
    )  # fmt: skip
    return torch.stack(list(frames), dim=1)
