"""`animatic render`: films from shot lists and storyboards, outputs, resume, errors."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageSequence

from pipeline import baselines, io, io_video
from pipeline.cli import main
from pipeline.render_models import load_tween_model
from pipeline.render_output import parts_folder
from pipeline.render_segments import SegmentCache, film_frames, shot_starts
from pipeline.shotlist import load_shotlist
from pipeline.storyboard_manifest import plan_from_manifest
from pipeline.storyboard_models import oracle_keyframes
from pipeline.timeline import animatic_frames, make_plan, plan_frames

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "shapes_film.yaml"
MODELS = ["--keyframe-model", "oracle", "--tween-model", "crossfade", "--quiet"]
rd = sys.modules["pipeline.render"]  # the package exports the function under this name

SHOTS = """\
title: tiny
size: 32
fps: 12
panels:
  - prompt: a large red circle at the top left on a navy background
    duration: 5
    hold: 2
  - prompt: a large red circle at the bottom right on a navy background
    duration: 4
    transition: cut
  - prompt: a small yellow square on the left on a teal background
    duration: 6
  - prompt: a small yellow square at the bottom on a teal background
    duration: 3
"""


def write_shots(folder: Path, text: str = SHOTS) -> Path:
    path = folder / "shots.yaml"
    path.write_text(text, encoding="utf-8")
    return path


class Recording:
    """The crossfade baseline, recording each call; raises KeyboardInterrupt on call `fail_on`."""

    model_id = "crossfade"

    def __init__(self, fail_on: int | None = None):
        self.calls: list[tuple[np.ndarray, list[int], int, int]] = []
        self.fail_on = fail_on

    def __call__(self, keys, positions, num_frames, seed):
        if len(self.calls) == self.fail_on:
            raise KeyboardInterrupt
        self.calls.append((keys.copy(), list(positions), num_frames, seed))
        return baselines.crossfade(keys, positions, num_frames)


def panel_images(board: Path) -> list[np.ndarray]:
    record = json.loads((board / "storyboard.json").read_text())
    return [io.read_image(board / p["file"]) for p in record["panels"]]


def test_example_film_end_to_end_mp4(tmp_path):
    out = tmp_path / "film.mp4"
    board = tmp_path / "board"
    args = ["render", str(EXAMPLE), "--out", str(out), "--storyboard", str(board), *MODELS]
    assert main(args) == 0
    frames, fps = io_video.read_video_frames(out)
    assert frames.shape == (168, 64, 64, 3) and fps == 24
    panels = panel_images(board)
    for key, panel in zip([0, 36, 60, 108, 144], panels, strict=True):
        error = np.abs(frames[key].astype(int) - panel.astype(int))
        assert error.mean() < 3 and np.percentile(error, 99) < 40  # H.264 at crf 18
    assert np.abs(frames[11].astype(int) - panels[0].astype(int)).mean() < 3  # the 12-frame hold
    assert not parts_folder(out).exists()  # the work folder goes once the film is done
    record = json.loads(io.sidecar_path(out).read_text())
    assert record["num_frames"] == 168 and record["models"] == {
        "keyframe": "oracle",
        "tween": "crossfade",
    }
    kinds = [s["kind"] for s in record["segments"]]
    assert kinds == ["tween", "tween", "cut", "tween", "cut"]
    assert not any(s["reused"] for s in record["segments"])


def test_film_frames_keep_keys_and_honour_cuts(tmp_path):
    shots = load_shotlist(write_shots(tmp_path))
    plan = plan_frames(shots)
    draw = oracle_keyframes(32, 32)
    images = list(draw([p.prompt for p in shots.panels], [""] * 4, [0, 1, 2, 3], 30, 5.0))
    tween = Recording()
    frames = list(film_frames(plan, images, tween, seeds=[5, 6, 7, 8], context=2))
    assert len(frames) == plan.num_frames == 18
    for key, image in zip(plan.keys, images, strict=True):
        assert np.array_equal(frames[key], image)
    assert np.array_equal(frames[1], images[0])  # hold: 2
    # Segments: hold, tween 0->1, hold, cut, hold, tween 2->3, hold, cut (end).
    keys, positions, num_frames, seed = tween.calls[0]
    assert positions == [0, 1, 5] and num_frames == 6 and seed == 5  # one frame of context
    assert np.array_equal(keys[0], images[0]) and np.array_equal(keys[2], images[1])
    keys, positions, num_frames, seed = tween.calls[1]  # cut after panel 2: extension
    assert positions == [0, 1, 2] and num_frames == 6 and seed == 6
    # Panel 3 starts a new shot: no context from before the cut.
    keys, positions, num_frames, seed = tween.calls[2]
    assert positions == [0, 6] and num_frames == 7 and np.array_equal(keys[0], images[2])
    assert shot_starts(plan)[9] == 9 and shot_starts(plan)[8] == 0
    # Frames between the keys come from the model (a cross-fade here).
    expected = baselines.crossfade(np.stack(images[2:4]), [0, 6], 7)
    assert all(np.array_equal(frames[9 + i], expected[i]) for i in range(1, 7))


def test_flow_preview_is_the_interpolators_flow_init():
    """`--tween-model flow` previews with the flow in-betweens along paths through the keys (eval's
    flow-paths), not plain optical flow, and names itself apart from it in segment hashes."""
    draw = oracle_keyframes(48, 48)
    prompts = ["a large red circle at the top left on a navy background"] * 2
    prompts[1] = prompts[1].replace("top left", "bottom right")
    keys = np.stack(list(draw(prompts, ["", ""], [0, 1], 30, 5.0)))
    preview = load_tween_model("flow")
    assert preview.model_id == "flow-paths"
    frames = preview(keys, [0, 8], 9, seed=0)
    assert np.array_equal(frames, baselines.flow_paths(keys, [0, 8], 9))
    assert not np.array_equal(frames, baselines.flow_warp(keys, [0, 8], 9))


def test_loop_tweens_back_to_the_first_panel():
    plan = make_plan([4, 4], [0, 0], ["tween", "tween"], loop=True, fps=12)
    images = [np.full((8, 8, 3), v, np.uint8) for v in (0, 240)]
    tween = Recording()
    frames = list(film_frames(plan, images, tween, seeds=[0, 1], context=0))
    assert len(frames) == 8 and tween.calls[1][1] == [0, 4]
    assert np.array_equal(tween.calls[1][0][1], images[0])  # the last tween ends on panel 1
    assert frames[5][0, 0, 0] > frames[7][0, 0, 0]  # fading back down towards panel 1


def test_resume_after_a_kill_matches_an_uninterrupted_render(tmp_path):
    shots = write_shots(tmp_path)
    board = tmp_path / "board"
    clean = tmp_path / "clean.mp4"
    rd.render(shots, clean, tween_model="crossfade", keyframe_model="oracle",
              storyboard_dir=board, verbose=False)  # fmt: skip

    out = tmp_path / "film.mp4"
    killed = Recording(fail_on=2)
    with pytest.raises(KeyboardInterrupt):
        rd.render(shots, out, tween_model=killed, keyframe_model="oracle", storyboard_dir=board)
    assert not out.exists() and len(killed.calls) == 2
    assert len(list(parts_folder(out).glob("segment_*.npz"))) == 2
    assert not list(tmp_path.glob(".film*"))  # no temp output left behind

    resumed = Recording()
    result = rd.render(shots, out, tween_model=resumed, keyframe_model="oracle",
                       storyboard_dir=board, verbose=False)  # fmt: skip
    assert len(resumed.calls) == 2  # 4 model segments, 2 reused
    assert [s["reused"] for s in result.record["segments"]] == [True, True, False, False]
    # The same frames went in (the tweens are recorded); the films are compared decoded, not as
    # bytes: in a long-lived test process x264 has coded the same frames a byte differently.
    resumed_frames, clean_frames = (io_video.read_video_frames(p)[0] for p in (out, clean))
    assert resumed_frames.shape == clean_frames.shape
    assert np.abs(resumed_frames.astype(int) - clean_frames).mean() < 0.5
    assert not parts_folder(out).exists()


def test_keep_parts_redoes_only_changed_segments(tmp_path):
    shots = write_shots(tmp_path)
    board = tmp_path / "board"
    out = tmp_path / "film.gif"
    first = Recording()
    rd.render(shots, out, tween_model=first, keyframe_model="oracle", storyboard_dir=board,
              keep_parts=True, verbose=False)  # fmt: skip
    assert len(first.calls) == 4
    write_shots(tmp_path, SHOTS.replace("square at the bottom", "square at the top"))
    again = Recording()
    rd.render(shots, out, tween_model=again, keyframe_model="oracle", storyboard_dir=board,
              keep_parts=True, overwrite=True, verbose=False)  # fmt: skip
    assert len(again.calls) == 2  # the tween into panel 4, and panel 4's cut


def test_gif_and_png_sequence_outputs(tmp_path):
    shots = write_shots(tmp_path)
    board = tmp_path / "board"
    gif = tmp_path / "film.gif"
    args = ["render", str(shots), "--out", str(gif), "--storyboard", str(board), *MODELS]
    assert main(args) == 0
    with Image.open(gif) as image:
        assert image.size == (32, 32)
        durations = [frame.info["duration"] for frame in ImageSequence.Iterator(image)]
    assert sum(durations) == 1500  # 18 frames at 12 fps (equal neighbours merge)

    seq = tmp_path / "frames"
    assert main(["render", str(board), "--out", str(seq), "--tween-model", "crossfade"]) == 0
    names = sorted(p.name for p in seq.iterdir())
    assert names[0] == "frames.0001.png" and names[-1] == "frames.0018.png" and len(names) == 18
    plan = plan_from_manifest(json.loads((board / "storyboard.json").read_text()))
    images = panel_images(board)
    expected = list(film_frames(plan, images, Recording(), seeds=[0, 1, 2, 3], context=2))
    for index, frame in enumerate(expected):
        assert np.array_equal(io.read_image(seq / f"frames.{index + 1:04d}.png"), frame)
    assert io.sidecar_path(seq).is_file()


def test_animatic_needs_no_tween_model(tmp_path):
    shots = write_shots(tmp_path)
    board = tmp_path / "board"
    assert main(["storyboard", str(shots), "--out", str(board), "--keyframe-model", "oracle"]) == 0
    seq = tmp_path / "preview"
    # The shot list names a tween model that does not exist; --animatic never loads it.
    assert main(["render", str(board), "--out", str(seq), "--animatic", "--quiet"]) == 0
    plan = plan_from_manifest(json.loads((board / "storyboard.json").read_text()))
    expected = list(animatic_frames(plan, panel_images(board)))
    got = [io.read_image(p) for p in sorted(seq.glob("*.png"))]
    assert len(got) == len(expected) == 18
    assert all(np.array_equal(a, b) for a, b in zip(got, expected, strict=True))
    assert json.loads(io.sidecar_path(seq).read_text())["mode"] == "animatic"


def test_render_reuses_a_matching_storyboard(tmp_path):
    shots = write_shots(tmp_path)
    board = tmp_path / "board"
    assert main(["storyboard", str(shots), "--out", str(board), "--keyframe-model", "oracle"]) == 0
    before = {p.name: p.stat().st_mtime_ns for p in board.iterdir()}

    def no_model(*args):
        raise AssertionError("the storyboard matched; no keyframe should be drawn")

    no_model.model_id = "oracle"
    rd.render(shots, tmp_path / "a.gif", tween_model="crossfade", keyframe_model=no_model,
              storyboard_dir=board, verbose=False)  # fmt: skip
    assert {p.name: p.stat().st_mtime_ns for p in board.iterdir()} == before


def test_segment_cache_ignores_damaged_parts(tmp_path):
    cache = SegmentCache(tmp_path)
    frames = np.arange(2 * 4 * 4 * 3, dtype=np.uint8).reshape(2, 4, 4, 3)
    cache.put(3, "ab" * 32, frames)
    assert np.array_equal(cache.get("ab" * 32, frames.shape), frames)
    assert cache.get("ab" * 32, (3, 4, 4, 3)) is None
    next(tmp_path.glob("segment_003-*.npz")).write_bytes(b"broken")
    assert cache.get("ab" * 32, frames.shape) is None


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["missing.yaml", "--out", "{tmp}/f.mp4"], "shot list not found"),
        (["{shots}", "--out", "{shots}/f.mp4"], "is a file"),  # unwritable: parent is a file
        (["{shots}", "--out", "{tmp}/f.avi"], "unsupported output format"),
        (["{shots}", "--out", "{tmp}/old.mp4"], "pass --overwrite"),
        (["{tmp}", "--out", "{tmp}/f.mp4"], "not a storyboard folder"),
        (["{shots}", "--out", "{tmp}/f.mp4", "--tween-model", "nope"], "model 'nope'"),
    ],
)
def test_bad_input_is_one_line_exit_2(tmp_path, capsys, args, message):
    shots = write_shots(tmp_path)
    (tmp_path / "old.mp4").write_bytes(b"the user's film")
    args = [a.format(tmp=tmp_path, shots=shots) for a in args]
    assert main(["render", *args, "--keyframe-model", "oracle", "--quiet"]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and err.count("\n") == 0 and "Traceback" not in err
    assert (tmp_path / "old.mp4").read_bytes() == b"the user's film"
    assert not list(tmp_path.glob("*.parts"))


@pytest.fixture(scope="module")
def trained_models(tmp_path_factory):
    """Tiny untrained keyframe and interpolation models saved as users get them."""
    import torch

    from interpolate.module import InterpolateModule
    from keyframe.module import KeyframeModule
    from keyframe.pretrained import save_pretrained

    unet = {
        "model_channels": 8,
        "channel_mult": [1, 2],
        "num_res_blocks": 1,
        "attention_levels": [1],
        "num_heads": 2,
        "ema_decay": 0.0,
        "sample_steps": 2,
    }
    text = {"text_width": 32, "text_layers": 1, "text_heads": 2, "text_context_length": 16}
    folder = tmp_path_factory.mktemp("models")
    torch.manual_seed(0)
    keyframe = KeyframeModule(image_size=16, **unet, **text, text_vocab_size=512)
    save_pretrained(keyframe, folder / "keyframe", fp16=False)
    tween = InterpolateModule(image_size=16, num_frames=6, temporal_heads=2, **unet)
    tween.save_pretrained(folder / "interpolate")
    return folder / "keyframe", folder / "interpolate"


@pytest.mark.slow
def test_trained_models_plug_in(tmp_path, trained_models):
    import torch

    keyframe_path, tween_path = trained_models
    text = SHOTS.replace("size: 32", "size: 16\nsteps: 2").replace("duration: 6", "duration: 9")
    shots = write_shots(tmp_path, text)
    out = tmp_path / "film.gif"
    board = tmp_path / "board"
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        models = {"tween_model": str(tween_path), "keyframe_model": str(keyframe_path)}
        result = rd.render(shots, out, storyboard_dir=board, device="cpu", verbose=False, **models)
        # A re-rolled panel with its own seed back is the panel the batch drew (per-image seeds).
        first = io.read_image(board / "shot01_panel02.png")
        storyboard_fn = sys.modules["pipeline.storyboard"].storyboard
        storyboard_fn(shots, board, keyframe_model=str(keyframe_path), reroll="2", seed=1,
                      device="cpu", verbose=False)  # fmt: skip
    finally:
        torch.set_num_threads(threads)
    assert np.array_equal(io.read_image(board / "shot01_panel02.png"), first)
    assert result.num_frames == 21 and result.record["models"]["tween"] == str(tween_path)
    assert len(result.record["segments"]) == 4
    with Image.open(out) as image:
        durations = [frame.info["duration"] for frame in ImageSequence.Iterator(image)]
    assert sum(durations) == 1750
