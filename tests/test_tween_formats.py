"""`animatic tween` with the formats artists work in: numbered keys in and out, alpha, 16-bit
and EXR depth, ProRes; model-free in-betweens (flow, crossfade), so no model is needed here."""

from __future__ import annotations

import json

import av
import cv2
import numpy as np
import pytest

from pipeline import media
from pipeline.baselines import flow_paths
from pipeline.cli import main

FRAMES = (101, 113, 125)


RED = (0.9003, 0.1001, 0.1002, 1.0)  # between the levels of 8 bits, not of 16 bits or half


def _box_key(path, x: int, depth: str = "8-bit", alpha: bool = True):
    """A 40x56 key: a red box at column x on a transparent (or grey) background."""
    frame = np.zeros((40, 56, 4 if alpha else 3), np.float32)
    if not alpha:
        frame[:] = 0.5
    frame[12:26, x : x + 10] = RED[: frame.shape[2]]
    if depth == "8-bit":
        frame = np.round(frame * 255) / 255
    media.write_frame(path, frame, depth)
    return frame


@pytest.fixture
def shot(tmp_path):
    folder = tmp_path / "keys"
    folder.mkdir()
    for frame, x in zip(FRAMES, (4, 20, 36), strict=True):
        _box_key(folder / f"shot_{frame:04d}.png", x)
    return folder


def _tween(*args) -> int:
    return main(["tween", *map(str, args)])


def _alpha_centre(path) -> float:
    alpha = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)[..., 3].astype(np.float64)
    return float((alpha * np.arange(alpha.shape[1])).sum() / alpha.sum())


def test_numbered_rgba_keys_give_a_numbered_rgba_sequence(shot, tmp_path):
    out = tmp_path / "out"
    keys = [shot / f"shot_{f:04d}.png" for f in FRAMES]
    assert _tween(*keys, "--out", out / "shot_####.png", "--model", "flow") == 0
    names = sorted(p.name for p in out.glob("shot_*.png"))
    assert names == [f"shot_{f:04d}.png" for f in range(101, 126)]  # 11 in-betweens per gap
    for key in keys:
        assert (out / key.name).read_bytes() == key.read_bytes()  # keys byte for byte
    image = cv2.imread(str(out / "shot_0107.png"), cv2.IMREAD_UNCHANGED)
    assert image.shape == (40, 56, 4)
    centres = [_alpha_centre(out / f"shot_{f:04d}.png") for f in (101, 104, 107, 110, 113)]
    assert np.allclose(centres, [8.5, 12.5, 16.5, 20.5, 24.5], atol=0.6)  # alpha moves along
    opaque = (image[..., 3] > 128).sum()
    assert abs(opaque - 140) <= 14  # the box keeps its size (14 x 10 px), no ghost
    record = json.loads((out / "shot.json").read_text())
    assert record["key_frames"] == list(FRAMES) and record["first_frame"] == 101
    assert record["timing_source"] == "numbers" and record["depth"] == "8-bit"
    assert record["channels"] == 4 and record["frames"] == 25 and record["model"] == "flow"


@pytest.mark.parametrize("pattern", ["shot_%04d.png", "shot_101-125#.png", "{folder}"])
def test_patterns_and_folders_of_keys_and_prores_4444_out(shot, tmp_path, pattern):
    source = str(shot) if pattern == "{folder}" else str(shot / pattern)
    out = tmp_path / "shot.mov"
    assert _tween(source, "--out", out, "--model", "crossfade") == 0
    with av.open(str(out)) as container:
        stream = container.streams.video[0]
        assert stream.codec_context.name == "prores" and stream.codec_context.profile == "4444"
        frames = [f.to_ndarray(format="rgba64le") for f in container.decode(stream)]
    assert len(frames) == 25 and frames[0].shape == (40, 64, 4)  # 4444: 16 px steps (transparent)
    assert frames[0][0, 0, 3] < 700 and frames[0][18, 8, 3] > 64800  # transparent / opaque


def test_folder_out_keeps_the_keys_names_and_timing_overrides(shot, tmp_path):
    out = tmp_path / "frames"
    assert _tween(shot, "--out", out, "--model", "crossfade", "--timing", "1,5,9") == 0
    assert sorted(p.name for p in out.iterdir()) == [f"shot_{f:04d}.png" for f in range(1, 10)]
    assert (out / "shot_0005.png").read_bytes() == (shot / "shot_0113.png").read_bytes()


@pytest.mark.parametrize(
    ("suffix", "depth", "dtype"),
    [(".png", "16-bit", np.uint16), (".exr", "half", np.float16), (".exr", "float", np.float32)],
)
def test_16bit_and_exr_keys_give_frames_at_their_depth(tmp_path, suffix, depth, dtype):
    keys = [tmp_path / f"plate.{f}{suffix}" for f in (1001, 1009)]
    made = [_box_key(k, x, depth) for k, x in zip(keys, (4, 36), strict=True)]
    out = tmp_path / "out" / f"plate.####{suffix}"
    assert _tween(*keys, "--out", out, "--model", "flow") == 0
    files = sorted((tmp_path / "out").glob(f"plate.*{suffix}"))
    assert [f.name for f in files] == [f"plate.{f}{suffix}" for f in range(1001, 1010)]
    assert files[-1].read_bytes() == keys[-1].read_bytes()
    middle, read_depth = media.read_frame(files[4])
    assert read_depth == depth and middle.shape == made[0].shape
    if suffix == ".png":
        assert cv2.imread(str(files[4]), cv2.IMREAD_UNCHANGED).dtype == dtype
    red = middle[18, 20, 0]  # the box, moved to the middle; not squeezed through 8 bits:
    assert abs(red - RED[0]) < 1e-3 and abs(red * 255 - round(red * 255)) > 0.1


def test_an_exposure_sheet_holds_keys_exactly(shot, tmp_path):
    sheet = tmp_path / "xsheet.csv"
    sheet.write_text("frame,key,hold\n1,keys/shot_0101.png,3\n7,keys/shot_0113.png,2\n")
    out = tmp_path / "out" / "act.####.png"
    assert _tween("--xsheet", sheet, "--out", out, "--model", "flow") == 0
    files = sorted((tmp_path / "out").glob("act.*.png"))
    assert [f.name for f in files] == [f"act.{f:04d}.png" for f in range(1, 9)]
    first, second = (shot / "shot_0101.png").read_bytes(), (shot / "shot_0113.png").read_bytes()
    assert [f.read_bytes() == first for f in files[:3]] == [True] * 3
    assert files[6].read_bytes() == second and files[7].read_bytes() == second
    assert files[4].read_bytes() not in (first, second)


def test_flow_on_8bit_rgb_keys_is_render_flow_exactly(tmp_path):
    keys = [tmp_path / f"k.{f:04d}.png" for f in (1, 9)]
    made = [_box_key(k, x, alpha=False) for k, x in zip(keys, (4, 30), strict=True)]
    assert _tween(*keys, "--out", tmp_path / "o" / "k.####.png", "--model", "flow") == 0
    ours = np.stack(
        [cv2.imread(str(tmp_path / "o" / f"k.{f:04d}.png"))[..., ::-1] for f in range(1, 10)]
    )
    keys8 = np.stack([media.quantize(m, "8-bit") for m in made])
    assert np.array_equal(ours, flow_paths(keys8, [0, 8], 9))


def test_python_api_returns_frames_and_writes_them(tmp_path):
    from pipeline import tween

    keys = [np.zeros((8, 8, 4), np.uint8), np.full((8, 8, 4), 255, np.uint8)]
    result = tween(keys, tmp_path / "api" / "f.####.png", model="crossfade", between=3)
    assert len(result.frames) == 5 and result.numbers == [1, 2, 3, 4, 5]
    assert result.frames[2].shape == (8, 8, 4) and np.allclose(result.frames[2], 0.5)
    assert len(result.files) == 5 and result.depth == "8-bit"
    only = tween(keys, model="crossfade", between=1)  # no out: frames only
    assert only.files == [] and np.allclose(only.frames[1], 0.5)


def _bad_setups(tmp_path, shot):
    _box_key(tmp_path / "shot_101.png", 4)
    _box_key(tmp_path / "rgb_0001.png", 4, alpha=False)
    _box_key(tmp_path / "deep_0009.png", 4, depth="16-bit")
    with open(tmp_path / "z.exr", "wb"):
        pass
    import OpenEXR

    header = {"compression": OpenEXR.ZIP_COMPRESSION, "type": OpenEXR.scanlineimage}
    with OpenEXR.File(header, {"Z": np.ones((4, 4), np.float32)}) as exr:
        exr.write(str(tmp_path / "z.exr"))
    return {"dup": [tmp_path / "shot_101.png", shot / "shot_0101.png"]}


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["{t}/shot_101.png", "{k}/shot_0101.png"], "both give frame 101"),
        (
            ["{k}/shot_0101.png", "{t}/deep_0009.png"],
            "shot_0101.png: 8-bit RGBA, but deep_0009.png is 16-bit RGBA",
        ),
        (
            ["{k}/shot_0101.png", "{t}/rgb_0001.png"],
            "shot_0101.png: 8-bit RGBA, but rgb_0001.png is 8-bit RGB",
        ),
        (["{t}/z.exr", "{t}/z.exr", "--between", "2"], "EXR has no R, G, B channels"),
        (["{t}/nothing_####.png"], "the pattern matches no files"),
        (["{k}/shot_####.png", "--out", "{k}/shot_####.png"], "would overwrite key"),
        (["{k}/shot_####.png", "--out", "{k}/shot.png"], "expected a folder, a numbered pattern"),
        (["{k}/shot_####.png", "--model", "shapes"], "works in 8-bit RGB"),
    ],
)
def test_bad_input_is_one_line_and_writes_nothing(shot, tmp_path, capsys, args, message):
    _bad_setups(tmp_path, shot)
    before = sorted(p.name for p in shot.iterdir())
    args = [a.format(t=tmp_path, k=shot) for a in args]
    if "--out" not in args:
        args += ["--out", str(tmp_path / "out" / "f.####.png")]
    if "--model" not in args:
        args += ["--model", "flow"]
    assert _tween(*args) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and err.startswith("animatic tween: error:") and "\n" not in err
    assert not (tmp_path / "out").exists() and sorted(p.name for p in shot.iterdir()) == before
