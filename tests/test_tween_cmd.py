"""`animatic tween`: keys of any size in, the full sequence out, with clear one-line errors."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from pipeline.cli import main
from pipeline.io import read_image
from pipeline.io_video import read_video_frames
from pipeline.sequences import KeyFile, plan_timing
from pipeline.tween_fit import from_model, make_fit, to_model

TINY = {
    "image_size": 16,
    "num_frames": 6,
    "model_channels": 8,
    "channel_mult": [1, 2],
    "num_res_blocks": 1,
    "attention_levels": [1],
    "num_heads": 2,
    "temporal_heads": 2,
    "ema_decay": 0.0,
    "sample_steps": 2,
}


pytestmark = pytest.mark.usefixtures("one_thread_module")


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory, tiny_interpolate):
    model = tiny_interpolate(**TINY)
    return str(model.save_pretrained(tmp_path_factory.mktemp("model") / "tiny"))


def _write_key(path, height, width, seed):
    rng = np.random.default_rng(seed)
    image = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
    assert cv2.imwrite(str(path), image[..., ::-1])
    return image


@pytest.fixture
def keys(tmp_path):
    folder = tmp_path / "keys"
    folder.mkdir()
    images = [_write_key(folder / f"key{i}.png", 12, 20, i) for i in range(3)]
    return folder, images


def _tween(model_dir, *args):
    return main(["tween", *map(str, args), "--model", model_dir])


def _sequence(folder):
    return sorted(folder.glob(f"{folder.name}.*.png"))


def test_png_sequence_keeps_keys_exact_and_restores_their_size(model_dir, keys, tmp_path):
    folder, images = keys
    out = tmp_path / "shot"
    paths = [folder / "key0.png", folder / "key1.png"]
    assert _tween(model_dir, *paths, "--out", out, "--between", 3, "--seed", 2) == 0
    files = _sequence(out)
    assert [f.name for f in files] == [f"shot.{i:04d}.png" for i in range(1, 6)]
    frames = [read_image(f) for f in files]
    assert all(f.shape == (12, 20, 3) for f in frames)
    assert np.array_equal(frames[0], images[0]) and np.array_equal(frames[4], images[1])
    record = json.loads((tmp_path / "shot.json").read_text())
    assert record["key_frames"] == [0, 4] and record["frames"] == 5
    assert record["seed"] == 2 and record["steps"] == 2 and record["fit"] == "letterbox"
    assert record["size"] == {"width": 20, "height": 12} and "provenance" in record
    # Same seed, same frames; the output is not replaced without --overwrite.
    assert _tween(model_dir, *paths, "--out", out, "--between", 3, "--seed", 2) == 2
    again = tmp_path / "again"
    assert _tween(model_dir, *paths, "--out", again, "--between", 3, "--seed", 2) == 0
    assert all(
        np.array_equal(read_image(a), b) for a, b in zip(_sequence(again), frames, strict=True)
    )


def test_key_folder_timing_and_mp4(model_dir, keys, tmp_path):
    folder, _ = keys
    out = tmp_path / "film.mp4"
    assert _tween(model_dir, folder, "--out", out, "--timing", "0,2,7", "--fps", 12) == 0
    frames, fps = read_video_frames(out)
    assert frames.shape == (8, 12, 20, 3) and fps == 12
    record = json.loads((tmp_path / "film.mp4.json").read_text())
    assert record["key_frames"] == [0, 2, 7] and record["timing"] == [0, 2, 7]
    assert record["init"] == "noise" and record["init_sigma"] is None  # the tiny model's default


def test_flow_init_is_used_and_recorded(model_dir, keys, tmp_path):
    folder, _ = keys
    paths = [folder / "key0.png", folder / "key1.png"]
    runs = {}
    for name, extra in {"noise": [], "flow": ["--init", "flow", "--init-sigma", "0.5"]}.items():
        out = tmp_path / name
        assert _tween(model_dir, *paths, "--out", out, "--between", 3, *extra) == 0
        runs[name] = [read_image(f) for f in _sequence(out)]
    record = json.loads((tmp_path / "flow.json").read_text())
    assert record["init"] == "flow" and record["init_sigma"] == 0.5
    assert np.array_equal(runs["flow"][0], runs["noise"][0])  # keys exact either way
    assert any(not np.array_equal(a, b) for a, b in zip(runs["flow"], runs["noise"], strict=True))


def test_motion_prior_is_used_and_recorded(model_dir, keys, tmp_path):
    """A model folder with a motion/ prior moves flow init's pixels along it (here a prior that
    puts every moving point 4 px right of the straight line); --no-motion-prior ignores it."""
    import shutil

    from interpolate.motion import MotionPrior

    with_prior = tmp_path / "with-prior"
    shutil.copytree(model_dir, with_prior)
    torch.manual_seed(0)
    prior = MotionPrior(hidden=8, depth=1)
    with torch.no_grad():
        prior.net[-1].weight.zero_()
        prior.net[-1].bias.copy_(torch.tensor([4 / 32 * prior.scale, 0.0]))
    prior.save_pretrained(with_prior / "motion")
    folder, _ = keys
    paths = [folder / "key0.png", folder / "key1.png"]
    runs = {}
    for name, extra in {"prior": [], "parabola": ["--no-motion-prior"]}.items():
        out = tmp_path / name
        args = [*paths, "--out", out, "--between", 3, "--init", "flow", *extra]
        assert main(["tween", *map(str, args), "--model", str(with_prior)]) == 0
        runs[name] = [read_image(f) for f in _sequence(out)]
        assert json.loads((tmp_path / f"{name}.json").read_text())["motion_prior"] == (
            name == "prior"
        )
    assert np.array_equal(runs["prior"][0], runs["parabola"][0])
    assert any(
        not np.array_equal(a, b) for a, b in zip(runs["prior"], runs["parabola"], strict=True)
    )


def test_loop_returns_to_the_first_key_without_repeating_it(model_dir, keys, tmp_path):
    folder, images = keys
    out = tmp_path / "cycle.gif"
    args = [folder / "key0.png", folder / "key1.png", "--out", out, "--between", 2, "--loop"]
    assert _tween(model_dir, *args) == 0
    frames, _ = read_video_frames(out)
    assert len(frames) == 6  # key0, 2, key1, 2; the closing key0 is dropped
    record = json.loads((tmp_path / "cycle.gif.json").read_text())
    assert record["key_frames"] == [0, 3, 6] and record["loop"] is True


def test_single_key_extends_with_between(model_dir, keys, tmp_path):
    folder, images = keys
    out = tmp_path / "more"
    assert _tween(model_dir, folder / "key2.png", "--out", out, "--between", 4) == 0
    frames = [read_image(f) for f in _sequence(out)]
    assert len(frames) == 5 and np.array_equal(frames[0], images[2])


def test_keys_of_different_sizes_are_resized_to_the_first(model_dir, keys, tmp_path, capsys):
    folder, images = keys
    big = _write_key(tmp_path / "big.png", 30, 24, 9)
    out = tmp_path / "mixed"
    assert _tween(model_dir, folder / "key0.png", tmp_path / "big.png", "--out", out) == 0
    assert "big.png is 24x30, resized to 20x12" in capsys.readouterr().err
    frames = [read_image(f) for f in _sequence(out)]
    assert len(frames) == 9 and all(f.shape == (12, 20, 3) for f in frames)
    assert np.array_equal(frames[-1], cv2.resize(big, (20, 12), interpolation=cv2.INTER_AREA))


def test_crop_fit_outputs_the_centre_square(model_dir, keys, tmp_path):
    folder, images = keys
    out = tmp_path / "square"
    args = [folder / "key0.png", folder / "key1.png", "--out", out, "--between", 1]
    assert _tween(model_dir, *args, "--fit", "crop") == 0
    frames = [read_image(f) for f in _sequence(out)]
    assert all(f.shape == (12, 12, 3) for f in frames)
    assert np.array_equal(frames[0], images[0][:, 4:16])


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["{k0}"], "a single key needs --between"),
        (["{k0}", "{k1}", "--timing", "0,5,9"], "3 frame numbers for 2 keys"),
        (["{k0}", "{k1}", "--timing", "5,5"], "strictly increasing"),
        (["{k0}", "{k1}", "--timing", "0,x"], "comma-separated frame numbers"),
        (["{k0}", "{k1}", "--timing", "0,4", "--loop"], "one more, where the loop closes"),
        (["{k0}", "{bad}"], "bad.png: not a readable image"),
        (["{k0}", "{k1}", "--between", "-1"], "--between -1"),
        (["{k0}", "{k1}", "--steps", "0"], "steps"),
        (["{k0}", "{k1}", "--init", "flow", "--init-sigma", "-1"], "init sigma"),
        (["{k0}", "{k1}", "--prompt", "a red circle"], "no text conditioning"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(model_dir, keys, tmp_path, capsys, args, message):
    folder, _ = keys
    (tmp_path / "bad.png").write_bytes(b"\x89PNG\r\n\x1a\nnot really")
    names = {"k0": folder / "key0.png", "k1": folder / "key1.png", "bad": tmp_path / "bad.png"}
    args = [a.format(**names) for a in args]
    assert _tween(model_dir, *args, "--out", tmp_path / "out") == 2
    err = capsys.readouterr().err.strip()
    assert message in err and err.startswith("animatic tween: error:") and "\n" not in err
    assert not (tmp_path / "out").exists()


def test_an_unknown_model_name_lists_the_shipped_ones(keys, tmp_path, capsys):
    folder, _ = keys
    assert main(["tween", str(folder), "--out", str(tmp_path / "o"), "--model", "nope"]) == 2
    err = capsys.readouterr().err
    assert "model 'nope': no such file or folder" in err and "(available: general, shapes)" in err


def test_letterbox_round_trip_and_positions():
    fit = make_fit(12, 20, 16, "letterbox")
    assert fit.box == (3, 0, 10, 16) and fit.out_size == (12, 20)
    image = np.full((12, 20, 3), 200, np.uint8)
    square = to_model(image, fit)
    assert square.shape == (16, 16, 3) and (square == 200).all()  # margins repeat the edges
    assert from_model(square, fit).shape == (12, 20, 3)

    def plan(count, between, timing, loop):
        keys = [KeyFile(Path(f"k{i}.png"), "k", None, 0, ".png") for i in range(count)]
        timing = plan_timing(keys, between, timing, loop)
        return timing.positions(), timing.length, timing.first

    assert plan(3, 2, None, loop=False) == ([0, 3, 6], 7, 0)
    assert plan(2, None, [0, 5, 9], loop=True) == ([0, 5, 9], 10, 0)
    assert plan(1, 4, None, loop=False) == ([0], 5, 0)
    assert plan(1, None, [6], loop=False) == ([0], 1, 6)  # no frames invented before the key
