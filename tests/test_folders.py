"""Folders are safe and exclusive: manifest names stay inside their folder, one writer per output
(a second run names the holder; a dead holder's lock is taken over), storyboards and renders
resume after `kill -9` and clean up what it left, and MP4 bytes depend only on the frames."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from keyframe.errors import UserError
from pipeline import io_video, locks, safety
from pipeline.cli import main

ROOT = Path(__file__).resolve().parents[1]
ORACLE = ["--keyframe-model", "oracle", "--quiet"]
MODELS = ["--keyframe-model", "oracle", "--tween-model", "crossfade", "--quiet"]
SHOTS = """\
title: tiny
size: 32
fps: 12
seed: 3
panels:
  - prompt: a large red circle at the top left on a navy background
    duration: 6
  - prompt: a large red circle at the bottom right on a navy background
    duration: 6
  - prompt: a small yellow square on the left on a teal background
    duration: 6
  - prompt: a small blue triangle at the top on a teal background
    duration: 6
"""


def write_shots(folder: Path, duration: int = 6) -> Path:
    path = folder / "shots.yaml"
    path.write_text(SHOTS.replace("duration: 6", f"duration: {duration}"), encoding="utf-8")
    return path


def one_line(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "Traceback" not in err, err
    return err


def python(code: str, *argv: str | Path) -> subprocess.CompletedProcess:
    """Run `code` with `argv` in a fresh interpreter importing this tree (the environment is
    passed through, so it imports the same checkout)."""
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code), *map(str, argv)],
        cwd=ROOT, env=dict(os.environ), capture_output=True, text=True, timeout=120,
    )  # fmt: skip


# ---------------------------------------------------------------- names from manifests


@pytest.mark.parametrize("name", ["../other/notes.txt", "/etc/hostname", "..", "a/b.png", ""])
def test_plain_name_refuses_anything_with_a_folder_part(name):
    with pytest.raises(UserError, match="not a plain file name"):
        safety.plain_name(name, "storyboard.json: panel 1's file")


def test_crafted_storyboard_manifest_cannot_delete_files_outside_the_board(tmp_path, capsys):
    shots, board = write_shots(tmp_path), tmp_path / "board"
    assert main(["storyboard", str(shots), "--out", str(board), *ORACLE]) == 0
    other = tmp_path / "other"
    other.mkdir()
    notes = other / "notes.txt"
    notes.write_text("the user's notes")
    record = json.loads((board / "storyboard.json").read_text())
    record["panels"].append(
        {**record["panels"][0], "number": 9, "file": "../other/notes.txt",
         "file_sha256": hashlib.sha256(notes.read_bytes()).hexdigest()}
    )  # fmt: skip
    (board / "storyboard.json").write_text(json.dumps(record))

    assert main(["storyboard", str(shots), "--out", str(board), *ORACLE]) == 2
    assert "'../other/notes.txt' is not a plain file name" in one_line(capsys)
    assert notes.read_text() == "the user's notes"
    assert main(["render", str(board), "--out", str(tmp_path / "f.gif"), *MODELS]) == 2
    assert "not a plain file name" in one_line(capsys)


def test_render_does_not_read_through_a_board_path(tmp_path, capsys):
    shots, board = write_shots(tmp_path), tmp_path / "board"
    assert main(["storyboard", str(shots), "--out", str(board), *ORACLE]) == 0
    record = json.loads((board / "storyboard.json").read_text())
    record["panels"][1]["file"] = "../../../../../../etc/hostname"
    (board / "storyboard.json").write_text(json.dumps(record))
    assert main(["render", str(board), "--out", str(tmp_path / "f.gif"), *MODELS]) == 2
    assert "is not a plain file name" in one_line(capsys)
    assert not (tmp_path / "f.gif").exists()


# ---------------------------------------------------------------- locks


HOLD = """
    import sys, time
    from pipeline import locks
    with locks.exclusive(sys.argv[1]):
        print("held", flush=True)
        time.sleep(60)
"""


def hold_lock(target: Path) -> subprocess.Popen:
    """A child process that takes `target`'s lock and sleeps; returns once it holds it."""
    child = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(HOLD), str(target)],
        cwd=ROOT, env=dict(os.environ), stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    assert child.stdout.readline().strip() == "held"
    return child


def test_a_second_render_to_one_output_says_who_holds_it(tmp_path, capsys):
    shots, out = write_shots(tmp_path), tmp_path / "film.mp4"
    child = hold_lock(out)
    try:
        assert main(["render", str(shots), "--out", str(out), *MODELS]) == 2
        err = one_line(capsys)
        assert f"pid {child.pid} on host" in err and "since" in err
        assert not out.exists() and not (tmp_path / "film.mp4.parts").exists()
    finally:
        child.kill()
        child.wait()
    # The holder died with kill -9: its lock file remains, and the next run takes it over.
    assert locks.lock_path(out).is_file()
    assert main(["render", str(shots), "--out", str(out), *MODELS]) == 0
    assert f"took over the lock of pid {child.pid}" in capsys.readouterr().err
    assert out.is_file() and not locks.lock_path(out).exists()


@pytest.mark.slow
def test_two_concurrent_renders_one_wins_the_other_says_so(tmp_path):
    shots = write_shots(tmp_path)
    out = tmp_path / "film.mp4"
    cmd = [sys.executable, "-m", "pipeline.cli", "render", str(shots), "--out", str(out), *MODELS]
    runs = [
        subprocess.Popen(cmd, cwd=ROOT, env=dict(os.environ), stderr=subprocess.PIPE, text=True)
        for _ in range(2)
    ]
    results = [(run.wait(timeout=120), run.stderr.read()) for run in runs]
    codes = sorted(code for code, _ in results)
    # Both exiting 0 would mean one film was silently replaced by the other.
    assert codes == [0, 2], results
    loser = next(err for code, err in results if code == 2)
    assert ("another animatic run is writing it" in loser) or ("exists" in loser)
    assert io_video.read_video_frames(out)[0].shape[0] == 24


def test_a_second_storyboard_into_one_folder_is_refused(tmp_path, capsys):
    shots, board = write_shots(tmp_path), tmp_path / "board"
    child = hold_lock(board)
    try:
        assert main(["storyboard", str(shots), "--out", str(board), *ORACLE]) == 2
        assert f"pid {child.pid}" in one_line(capsys)
        assert not board.exists()
    finally:
        child.kill()
        child.wait()


# ---------------------------------------------------------------- kill -9 and resume

KILLED_STORYBOARD = """
    import os, signal, sys
    from pipeline.storyboard import storyboard
    from pipeline.storyboard_models import oracle_keyframes
    draw, calls = oracle_keyframes(32, 32), []

    def model(prompts, negatives, seeds, steps, guidance):
        calls.append(prompts)
        if len(calls) == 3:  # the third panel: killed while drawing it
            os.kill(os.getpid(), signal.SIGKILL)
        return draw(prompts, negatives, seeds, steps, guidance)

    model.model_id = "oracle"
    storyboard(sys.argv[1], sys.argv[2], keyframe_model=model, batch_size=1, verbose=False)
"""


def test_storyboard_killed_with_sigkill_resumes(tmp_path, capsys):
    shots = write_shots(tmp_path)
    board, clean = tmp_path / "board", tmp_path / "clean"
    assert main(["storyboard", str(shots), "--out", str(clean), *ORACLE]) == 0
    killed = python(KILLED_STORYBOARD, shots, board)
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    record = json.loads((board / "storyboard.json").read_text())
    assert record["complete"] is False and len(record["panels"]) == 2  # two were finished
    (board / ".shot01_panel03.0123abcd.tmp.png").write_bytes(b"half a panel")  # as a kill leaves

    assert main(["storyboard", str(shots), "--out", str(board), "--keyframe-model", "oracle"]) == 0
    assert "drawn this run: 3, 4" in capsys.readouterr().out
    files = sorted(p.name for p in board.iterdir())
    assert files == sorted(p.name for p in clean.iterdir())  # no temp files, no lock left
    for name in files:
        if name.endswith(".png"):
            assert (board / name).read_bytes() == (clean / name).read_bytes(), name


KILLED_RENDER = """
    import os, signal, sys
    from pipeline import baselines
    from pipeline.render import render
    calls = []

    def tween(keys, positions, num_frames, seed):
        calls.append(seed)
        if len(calls) == 4:  # the last tween, while the MP4 is being written
            os.kill(os.getpid(), signal.SIGKILL)
        return baselines.crossfade(keys, positions, num_frames)

    tween.model_id = "crossfade"
    render(sys.argv[1], sys.argv[2], tween_model=tween, verbose=False)
"""


def test_render_killed_with_sigkill_resumes_and_leaves_no_temp_files(tmp_path):
    shots, board = write_shots(tmp_path, duration=24), tmp_path / "board"  # past x264's delay
    assert main(["storyboard", str(shots), "--out", str(board), *ORACLE]) == 0
    clean, out = tmp_path / "clean.mp4", tmp_path / "film.mp4"
    assert main(["render", str(board), "--out", str(clean), *MODELS]) == 0
    killed = python(KILLED_RENDER, board, out)
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    assert safety.temporaries(tmp_path, ["film.mp4", "film"])  # the half-written MP4
    assert main(["render", str(board), "--out", str(out), *MODELS]) == 0
    record = json.loads((tmp_path / "film.mp4.json").read_text())
    assert [s["reused"] for s in record["segments"] if "reused" in s] == [True, True, True, False]
    # Same frames in, same film out. Not compared as bytes: in one long-lived process x264 has
    # been seen to code the same frames a byte differently (not reproducible in a fresh one).
    resumed, reference = (io_video.read_video_frames(p)[0] for p in (out, clean))
    assert resumed.shape == reference.shape and len(resumed) == 96
    assert np.abs(resumed.astype(int) - reference).mean() < 0.5  # within x264's noise
    leftovers = {p.name for p in tmp_path.iterdir()} - {"shots.yaml", "board"}
    assert leftovers == {"clean.mp4", "clean.mp4.json", "film.mp4", "film.mp4.json"}


# ---------------------------------------------------------------- MP4 bytes


def test_mp4_bytes_depend_only_on_the_frames(tmp_path):
    rng = np.random.default_rng(0)
    base = rng.integers(0, 256, (96, 160, 3), dtype=np.uint8)
    frames = [np.roll(base, 3 * i, axis=1) for i in range(12)]
    first = io_video.write_mp4(tmp_path / "a.mp4", frames, 24).read_bytes()
    import torch  # a loaded torch may change the CPUs x264 sees as its own

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        second = io_video.write_mp4(tmp_path / "b.mp4", frames, 24).read_bytes()
    finally:
        torch.set_num_threads(threads)
    assert first == second
    assert b"Lavf" not in first  # no muxer version string: same bytes across FFmpeg builds
