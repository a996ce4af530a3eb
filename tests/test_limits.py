"""Limits with a clear line, checked before any work: guidance, frame counts, image and sample
sizes, prompt length, placement time, loader options, and writes that cannot succeed (a
read-only --out, a full disk) - one line each, nothing half-written left behind."""

from __future__ import annotations

import json
import math
import os
import struct
import subprocess
import sys
import time
import zlib
from pathlib import Path

import numpy as np
import pytest

from keyframe import layout
from pipeline import io, safety
from pipeline.cli import main

ROOT = Path(__file__).resolve().parents[1]
SHOTS = """\
size: {size}
panels:
  - prompt: a large red circle at the top left on a navy background
    duration: 4
  - prompt: a small blue square at the bottom on a teal background
    duration: 4
"""


def one_line(capsys, code: int) -> str:
    err = capsys.readouterr().err.strip()
    assert code == 2, err
    assert err.count("\n") == 0 and "Traceback" not in err, err
    return err


def png_header(path: Path, width: int, height: int) -> Path:
    """A PNG whose header claims width x height (its pixel data is a stub): what a huge key
    looks like to a reader that checks the header before decoding."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        crc = zlib.crc32(kind + data) & 0xFFFFFFFF
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    data = chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + data)
    return path


@pytest.fixture
def keys(tmp_path) -> list[str]:
    paths = []
    for i in range(2):
        path = tmp_path / f"key{i}.png"
        io.write_png(path, np.full((16, 16, 3), 90 * i, np.uint8))
        paths.append(str(path))
    return paths


@pytest.mark.parametrize(
    ("extra", "words"),
    [
        (["--guidance", "1e30"], "--guidance: expected a number from 0 to 100, got 1e+30"),
        (["--guidance", "nan"], "--guidance: expected a number from 0 to 100, got nan"),
        (["--between", "1000000"], "1000002 frames is more than 100000"),
        (["--timing", "0,99999999"], "frames is more than 100000"),
        (["--fps", "1e30"], "--fps: expected a number"),
        (["--fps", "inf"], "--fps: expected a number"),
        (["--steps", "0"], "--steps: expected a whole number from 1 to 1000"),
    ],
)
def test_tween_numbers_out_of_range_fail_before_the_model_loads(
    keys, tmp_path, capsys, extra, words
):
    out = tmp_path / "t.mp4"  # checked before the (unknown) model is looked up
    code = main(["tween", *keys, "--out", str(out), "--model", "no-such-model", *extra])
    assert words in one_line(capsys, code)
    assert not out.exists()


def test_a_huge_key_is_refused_from_its_header(keys, tmp_path, capsys):
    huge = png_header(tmp_path / "huge.png", 12000, 9000)
    code = main(["tween", str(huge), keys[1], "--out", str(tmp_path / "t.mp4")])
    assert "12000x9000 is too large" in one_line(capsys, code)


@pytest.mark.parametrize(
    ("extra", "words"),
    [
        (["--guidance", "1e30"], "--guidance: expected a number from 0 to 100"),
        (["--guidance", "nan"], "--guidance: expected a number from 0 to 100"),
        (["--size", "4096"], "4096x4096 is more than 4x the 64 px"),
    ],
)
@pytest.mark.slow
def test_keyframe_guidance_and_size_limits(tmp_path, capsys, extra, words):
    out = tmp_path / "k.png"
    assert words in one_line(capsys, main(["keyframe", "a red circle", "--out", str(out), *extra]))
    assert not out.exists()


def test_storyboard_size_beyond_the_model_fails_before_any_panel(tmp_path, capsys):
    shots = tmp_path / "shots.yaml"
    shots.write_text(SHOTS.format(size=4096))
    board = tmp_path / "board"
    code = main(["storyboard", str(shots), "--out", str(board), "--keyframe-model", "shapes"])
    assert "4096x4096 is more than 4x" in one_line(capsys, code)
    assert not board.exists()


@pytest.mark.slow
def test_a_long_prompt_is_truncated_with_one_warning_line(tmp_path):
    """In a child process: pytest records warnings instead of showing them."""
    prompt = "a large red circle at the top left on a navy background " * 40
    argv = ["keyframe", prompt, "--out", str(tmp_path / "k.png"), "--steps", "1", "--no-place"]
    done = subprocess.run(
        [sys.executable, "-m", "pipeline.cli", *argv],
        cwd=ROOT, env=dict(os.environ), capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    lines = [line.strip() for line in done.stderr.splitlines() if "warning" in line.lower()]
    assert len(lines) == 1, lines  # one line, on its own (not after the progress bar)
    assert lines[0].startswith("animatic keyframe: warning: prompt truncated to 77 tokens")


def test_placement_is_bounded_for_many_position_phrases():
    prompt = "a red circle at the top left and a blue square at the bottom right " * 50
    with pytest.warns(UserWarning, match="more than 9 position phrases"):
        subjects = layout.prompt_subjects(prompt)
    assert len(subjects) == layout.MAX_SUBJECTS
    rng = np.random.default_rng(0)
    regions = [
        layout.Region(tuple(rng.random(2)), 0.05, tuple(rng.random(3) * 255), float(a))
        for a in sorted(rng.random(20) * 0.1, reverse=True)
    ]
    started = time.perf_counter()
    fit = layout.fit_subjects(subjects, regions)
    assert time.perf_counter() - started < 10  # trying every permutation took hours
    assert len(fit.pairs) == 9 and math.isfinite(fit.score)


def test_placement_matching_is_the_cheapest():
    costs = [[1.0, 5.0, 3.0], [1.5, 9.0, 1.4], [0.1, 2.0, 8.0]]
    # 1.0 + 1.4 + 2.0 = 4.4; taking each row's cheapest first (0.1 for the last) costs 6.5
    assert layout._cheapest_matching(costs) == [0, 2, 1]
    assert layout._cheapest_matching([[5.0], [3.0]]) == [None, 0]  # two subjects, one region
    assert layout._cheapest_matching([[20.0]]) == [None]  # UNMATCHED costs 10


@pytest.mark.parametrize(
    ("stage", "option", "value"),
    [
        ("keyframe", "--data.batch_size", "0"),
        ("interpolate", "--data.batch_size", "0"),
        ("keyframe", "--data.num_workers", "-1"),
    ],
)
@pytest.mark.slow
def test_loader_options_are_one_line_errors(tiny_shapes, tmp_path, capsys, stage, option, value):
    config = ROOT / "configs" / stage / "tiny.yaml"
    argv = ["train", stage, "fit", "--config", str(config), "--data.data", str(tiny_shapes),
            "--trainer.default_root_dir", str(tmp_path), option, value]  # fmt: skip
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert f"data.{option.split('.')[-1]}: expected a whole number" in err


def test_sidecars_never_hold_bare_nan(tmp_path):
    out = tmp_path / "x.png"
    io.write_sidecar(out, {"guidance": float("nan"), "scale": np.float32("inf"), "ok": 1.5})
    text = io.sidecar_path(out).read_text()
    assert "NaN" not in text and "Infinity" not in text
    record = json.loads(text)
    assert record["guidance"] == "nan" and record["scale"] == "inf" and record["ok"] == 1.5


# ---------------------------------------------------------------- writes that cannot succeed


@pytest.fixture
def tmpfs(tmp_path):
    """Mount a small tmpfs (root only; skipped elsewhere): `tmpfs(size, readonly)` -> folder."""
    mounted = []

    def mount(size: str, readonly: bool = False) -> Path:
        where = tmp_path / f"disk{len(mounted)}"
        where.mkdir()
        options = f"size={size}" + (",ro" if readonly else "")
        done = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(where)], capture_output=True
        )
        if done.returncode != 0:
            pytest.skip("cannot mount a tmpfs here (needs root)")
        mounted.append(where)
        return where

    yield mount
    for where in mounted:
        subprocess.run(["umount", str(where)], capture_output=True)


def _board(tmp_path: Path, size: int = 32) -> Path:
    shots = tmp_path / "shots.yaml"
    shots.write_text(SHOTS.format(size=size))
    board = tmp_path / "board"
    assert main(["storyboard", str(shots), "--out", str(board), "--keyframe-model", "oracle",
                 "--quiet"]) == 0  # fmt: skip
    return board


def test_read_only_file_system_is_refused_before_the_work(tmp_path, tmpfs, capsys):
    board = _board(tmp_path)
    disk = tmpfs("1m", readonly=True)
    for out in (disk / "film.mp4", disk / "frames"):
        code = main(["render", str(board), "--out", str(out), "--animatic", "--quiet"])
        assert "Read-only file system" in one_line(capsys, code)
    assert not any(disk.iterdir())


@pytest.mark.skipif(hasattr(os, "geteuid") and os.geteuid() == 0, reason="root writes anywhere")
def test_read_only_folder_is_refused_before_the_work(tmp_path, capsys):
    board = _board(tmp_path)
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o555)
    try:
        code = main(["render", str(board), "--out", str(locked / "f.mp4"), "--animatic"])
        assert "not writable" in one_line(capsys, code)
    finally:
        locked.chmod(0o755)


def test_a_nearly_full_disk_is_refused_before_the_work(tmp_path, tmpfs, capsys):
    board = _board(tmp_path)
    disk = tmpfs("1m")
    code = main(["render", str(board), "--out", str(disk / "f.mp4"), "--animatic", "--quiet"])
    assert "MiB free" in one_line(capsys, code)
    assert not any(disk.iterdir())


def test_a_disk_that_fills_up_mid_write_is_one_line_and_leaves_nothing(
    tmp_path, tmpfs, capsys, monkeypatch
):
    """Random 256 px panels held for 48 frames make a PNG sequence larger than the disk."""
    rng = np.random.default_rng(0)
    keys = []
    for i in range(2):
        keys.append(tmp_path / f"noise{i}.png")
        io.write_png(keys[-1], rng.integers(0, 256, (256, 256, 3), dtype=np.uint8))
    shots = tmp_path / "art.yaml"
    shots.write_text(
        "size: 256\npanels:\n"
        + "".join(f"  - image: {k}\n    prompt: noise\n    duration: 48\n" for k in keys)
    )
    disk = tmpfs("4m")
    monkeypatch.setattr(safety, "MIN_FREE_BYTES", 1 << 20)  # let the early check pass
    out = disk / "frames"
    code = main(["render", str(shots), "--out", str(out), "--animatic", "--quiet",
                 "--storyboard", str(tmp_path / "board")])  # fmt: skip
    assert "No space left on device" in one_line(capsys, code)
    assert sorted(disk.iterdir()) == []  # no half-written sequence, temp folder or lock
