"""The shipped `general` interpolator as the default of `animatic tween` and of shot lists whose
keys are not the shapes world's: keys of any size, depth and channels, in-betweens at their size."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest

from interpolate.general.model import MotionConfig
from interpolate.general.pipeline import GeneralInterpolator
from pipeline.cli import main
from pipeline.shotlist import load_shotlist

pytestmark = pytest.mark.usefixtures("one_thread_module")


def textured(height: int, width: int, shift: int, seed: int = 0) -> np.ndarray:
    """A smooth random texture (photo-like) moved right by `shift` px, uint8 BGR."""
    rng = np.random.default_rng(seed)
    base = cv2.resize(rng.integers(0, 256, (height // 8 + 2, width // 8 + 2, 3), np.uint8),
                      (width + 64, height), interpolation=cv2.INTER_CUBIC)  # fmt: skip
    return np.ascontiguousarray(base[:, 32 - shift : 32 - shift + width])


def tween(keys, out, between: int) -> int:
    return main(["tween", *keys, "--out", str(out), "--between", str(between)])


def write_keys(folder, keys, ext="png"):
    paths = []
    for i, key in enumerate(keys):
        paths.append(str(folder / f"key{i}.{ext}"))
        cv2.imwrite(paths[-1], key)
    return paths


def test_the_shipped_general_model_has_no_network_and_says_so(tmp_path, capsys):
    pipe = GeneralInterpolator.from_pretrained("general")
    assert not pipe.trained  # shipped without weights until trained ones beat the flow init
    folder = pipe.save_pretrained(tmp_path / "copy")
    assert not (folder / "model.safetensors").exists()
    assert not GeneralInterpolator.from_pretrained(folder).trained
    keys = write_keys(tmp_path, [textured(300, 400, s) for s in (0, 12)])
    assert (
        main(["tween", *keys, "--out", str(tmp_path / "out" / "f_####.png"), "--between", "3"]) == 0
    )
    err = capsys.readouterr().err
    assert "no trained motion network" in err and "working resolution" not in err
    frames = sorted((tmp_path / "out").glob("f_*.png"))
    assert len(frames) == 5 and cv2.imread(str(frames[2])).shape == (300, 400, 3)
    record = json.loads((tmp_path / "out" / "f.json").read_text())
    assert record["model"] == "general" and record["steps"] == 0


def test_default_inbetweens_of_a_photo_pan_beat_a_crossfade(tmp_path):
    keys = [textured(240, 320, s, seed=1) for s in (0, 8, 16)]
    paths = write_keys(tmp_path, [keys[0], keys[2]])
    assert (
        main(["tween", *paths, "--out", str(tmp_path / "o" / "f_####.png"), "--between", "1"]) == 0
    )
    middle = cv2.imread(str(tmp_path / "o" / "f_0002.png")).astype(np.float32)
    fade = (keys[0].astype(np.float32) + keys[2]) / 2
    inner = (slice(8, -8), slice(24, -24))  # away from the edges the pan brings in
    error = np.abs(middle - keys[1])[inner].mean()
    assert error < 0.5 * np.abs(fade - keys[1])[inner].mean() and error < 4


def test_large_keys_are_moved_at_the_working_size_and_made_at_their_own(tmp_path, capsys):
    keys = write_keys(tmp_path, [textured(600, 1000, s) for s in (0, 20)])
    out = tmp_path / "o" / "f_####.png"
    assert tween(keys, out, 1) == 0
    assert "motion is made at 512x304" in capsys.readouterr().err
    assert cv2.imread(str(tmp_path / "o" / "f_0002.png")).shape == (600, 1000, 3)


@pytest.mark.parametrize(
    "kind",
    ["grayscale", "16-bit", "rgba", "tiny", "other-size"],
)
def test_keys_of_every_kind_work_with_the_default_model(tmp_path, capsys, kind):
    a, b = textured(120, 160, 0), textured(120, 160, 6)
    if kind == "grayscale":
        a, b = a[..., 0], b[..., 0]
    elif kind == "16-bit":
        a, b = a.astype(np.uint16) * 257, b.astype(np.uint16) * 257
    elif kind == "rgba":
        alpha = np.full(a.shape[:2] + (1,), 255, np.uint8)
        alpha[:20] = 0
        a, b = np.concatenate([a, alpha], -1), np.concatenate([b, alpha], -1)
    elif kind == "tiny":
        a, b = cv2.resize(a, (8, 8)), cv2.resize(b, (8, 8))
    elif kind == "other-size":
        b = cv2.resize(b, (100, 120))
    keys = write_keys(tmp_path, [a, b])
    assert (
        main(["tween", *keys, "--out", str(tmp_path / "o" / "f_####.png"), "--between", "2"]) == 0
    )
    middle = cv2.imread(str(tmp_path / "o" / "f_0002.png"), cv2.IMREAD_UNCHANGED)
    expected = {"grayscale": 3, "16-bit": 3, "rgba": 4, "tiny": 3, "other-size": 3}[kind]
    assert middle.shape[:2] == a.shape[:2] and middle.shape[2] == expected
    assert middle.dtype == (np.uint16 if kind == "16-bit" else np.uint8)
    if kind == "rgba":
        assert middle[:17, :, 3].max() == 0 and middle[23:, :, 3].min() == 255  # edge: 3 px
    if kind == "other-size":
        assert "resized to 160x120" in capsys.readouterr().err


def test_shot_lists_pick_the_interpolator_of_their_keyframes_world(tmp_path):
    def shots(models: str):
        path = tmp_path / "shots.yaml"
        path.write_text(f"{models}panels:\n  - prompt: a red circle\n  - prompt: a blue square\n")
        return load_shotlist(path)

    assert shots("").interpolate_model == "shapes"
    assert shots("models: {keyframe: oracle}\n").interpolate_model == "shapes"
    assert shots("models: {keyframe: diffusers:sd15}\n").interpolate_model == "general"
    named = shots("models: {keyframe: diffusers:sd15, interpolate: shapes}\n")
    assert named.interpolate_model == "shapes"


def test_a_config_that_names_a_network_needs_its_weights(tmp_path):
    folder = GeneralInterpolator(None, MotionConfig()).save_pretrained(tmp_path / "m")
    record = json.loads((folder / "config.json").read_text())
    record.pop("network")
    (folder / "config.json").write_text(json.dumps(record))
    with pytest.raises(Exception, match="no model.safetensors"):
        GeneralInterpolator.from_pretrained(folder)


def test_a_still_background_of_any_colour_holds_within_2_of_255(tmp_path):
    """Per-pixel random colours (no training clip has them) behind a moving square: wherever
    both keys agree, far from the square's path, every in-between keeps the keys' colour."""
    rng = np.random.default_rng(5)
    background = rng.integers(0, 256, (96, 128, 3), np.uint8)
    keys = []
    for x in (10, 60):
        key = background.copy()
        key[30:54, x : x + 24] = (20, 200, 240)
        keys.append(key)
    assert tween(write_keys(tmp_path, keys), tmp_path / "o" / "f_####.png", 5) == 0
    path = np.ones(background.shape[:2], bool)
    path[22:62, 2:94] = False  # the square's path and a margin of 8 px
    for f in range(2, 7):
        frame = cv2.imread(str(tmp_path / "o" / f"f_{f:04d}.png")).astype(int)
        assert np.abs(frame - background)[path].max() <= 2
