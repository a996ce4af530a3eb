"""`animatic bench --pipeline`: the user-facing jobs timed end to end with trained models.

Each job runs as the `animatic` command a user would type, in a fresh process (so model loading
and imports count), into a fresh folder, `repeats` times; the median is reported:
an 8-panel storyboard at 64 px, 15 in-betweens between two 64 px keys, and the README's main
job (the example shot list's storyboard and its MP4 film).
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import yaml

from keyframe.errors import UserError

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "shapes_film.yaml"
PANELS = 8
BETWEEN = 15


def _animatic(argv: Sequence[str], threads: int) -> float:
    """Wall seconds of one `animatic ...` run in a new process; a failure is an error."""
    env_threads = {"OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    start = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-m", "pipeline.cli", *argv],
        capture_output=True,
        text=True,
        env={**os.environ, **env_threads},
        cwd=ROOT,
    )
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        tail = (done.stderr or done.stdout).strip().splitlines()[-1:] or ["no output"]
        raise UserError(f"bench --pipeline: `animatic {' '.join(argv)}` failed: {tail[0]}")
    return seconds


def _storyboard_shots(folder: Path, keyframe_model: str) -> Path:
    from pipeline.eval_keyframe import keyframe_prompts

    prompts = [caption for caption, _ in keyframe_prompts(PANELS - 2, 2, seed=5)]
    shots = {
        "title": "bench",
        "size": 64,
        "models": {"keyframe": keyframe_model},
        "panels": [{"prompt": p, "duration": 12} for p in prompts],
    }
    path = folder / "bench_shots.yaml"
    path.write_text(yaml.safe_dump(shots, sort_keys=False), encoding="utf-8")
    return path


def _keys(folder: Path) -> list[Path]:
    from pipeline.eval_tween import tween_clips
    from pipeline.io import write_png

    clip = tween_clips(1, 64, BETWEEN + 2, seed=5)[0]
    return [write_png(folder / f"key{i}.png", clip.frames[f]) for i, f in enumerate((0, -1))]


def _jobs(root: Path, keyframe_model: str, tween_model: str) -> dict[str, Callable[[int], list]]:
    """Each job's `animatic` command lines for run i (each run writes to its own folder)."""
    shots = _storyboard_shots(root, keyframe_model)
    keys = [str(p) for p in _keys(root)]
    return {
        f"storyboard, {PANELS} panels at 64 px": lambda i: [
            ["storyboard", str(shots), "--out", str(root / f"board{i}"), "--quiet"]
        ],
        f"tween, {BETWEEN} in-betweens between two 64 px keys": lambda i: [
            [
                "tween",
                *keys,
                "--out",
                str(root / f"tween{i}"),
                "--between",
                str(BETWEEN),
                "--model",
                tween_model,
            ]
        ],  # fmt: skip
        "README main job: storyboard + MP4 film of examples/shapes_film.yaml": lambda i: [
            [
                "storyboard",
                str(EXAMPLE),
                "--out",
                str(root / f"film{i}"),
                "--quiet",
                "--keyframe-model",
                keyframe_model,
            ],
            [
                "render",
                str(root / f"film{i}"),
                "--out",
                str(root / f"film{i}.mp4"),
                "--tween-model",
                tween_model,
                "--quiet",
            ],
        ],  # fmt: skip
    }


def bench_pipeline(
    keyframe_model: str = "shapes",
    tween_model: str = "shapes",
    repeats: int = 3,
    threads: int = 2,
    log: Callable[[str], None] = print,
) -> list[dict[str, Any]]:
    """Median wall seconds (and every run's) of each job; see the module docstring."""
    rows = []
    with tempfile.TemporaryDirectory(prefix="animatic-bench-") as tmp:
        root = Path(tmp)
        jobs = _jobs(root, keyframe_model, tween_model)
        for what, commands in jobs.items():
            runs = []
            for i in range(repeats):
                runs.append(sum(_animatic(argv, threads) for argv in commands(i)))
                log(f"{what}: run {i + 1}/{repeats} {runs[-1]:.1f} s")
            rows.append({"what": what, "median_s": statistics.median(runs), "runs_s": runs})
    return rows
