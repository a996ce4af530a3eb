"""`animatic bench --general`: the general interpolator on large keys, as an artist would use it.

Keys are 1280x720 (or `--general-size`) frames of a textured scene with a moving square; keys
every KEY_GAP frames over sequences of 16, 32 and 64 frames. Reported per length: seconds per
in-between (model loaded once, outside the timing) and peak resident memory above the start:
the frames stream out, so memory should stay flat as the sequence grows.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

import cv2
import numpy as np

from pipeline.eval_video import PeakMemory

KEY_GAP = 8
LENGTHS = (16, 32, 64)


def bench_keys(height: int, width: int, count: int, seed: int = 0) -> list[np.ndarray]:
    """`count` keys (h, w, 3) float32: a smooth random texture panning, a square crossing it."""
    rng = np.random.default_rng(seed)
    texture = cv2.resize(rng.random((24, 40, 3)).astype(np.float32), (width + 64 * count, height),
                         interpolation=cv2.INTER_CUBIC)  # fmt: skip
    keys = []
    for k in range(count):
        key = np.ascontiguousarray(texture[:, 8 * k : 8 * k + width])
        x = int((0.1 + 0.8 * k / max(count - 1, 1)) * (width - height // 4))
        key[height // 3 : height // 3 + height // 4, x : x + height // 4] = (0.9, 0.2, 0.1)
        keys.append(np.clip(key, 0, 1))
    return keys


def bench_general(
    model: str, size: tuple[int, int], lengths: Sequence[int] = LENGTHS, log: Callable = print
) -> list[dict]:
    """One row per sequence length: seconds per in-between and peak memory (MB)."""
    from interpolate.general.pipeline import GeneralInterpolator, working_shape

    pipe = GeneralInterpolator.from_pretrained(model)
    height, width = size
    rows = []
    for length in lengths:
        positions = list(range(0, length, KEY_GAP))
        if positions[-1] != length - 1:
            positions.append(length - 1)
        keys = bench_keys(height, width, len(positions))
        start = time.perf_counter()
        with PeakMemory() as memory:
            made = sum(1 for _ in pipe(keys, positions, length))
        seconds = time.perf_counter() - start
        between = length - len(positions)
        work = working_shape(height, width, pipe.config)
        row = {
            "what": f"{width}x{height} keys, {length} frames ({between} in-betweens)",
            "frames": made,
            "seconds_per_inbetween": seconds / between,
            "peak_memory_mb": memory.peak / 2**20,
            "working_size": f"{work[1]}x{work[0]}",
        }
        log(f"{row['what']}: {row['seconds_per_inbetween']:.2f} s per in-between, peak "
            f"{row['peak_memory_mb']:.0f} MB (motion at {row['working_size']})")  # fmt: skip
        rows.append(row)
    return rows
