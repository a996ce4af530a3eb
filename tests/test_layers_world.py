"""The layers world: image sources, scenes, the exact motion of every pixel, the dataset command."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest

from interpolate.layer_motion import LayerTrack, tracks_from_arrays, truth_motion
from keyframe.errors import UserError
from pipeline.cli import main
from pipeline.layers.sources import find_sources, png_has_alpha
from pipeline.layers.world import cel_shade, motion_arrays, random_scene, render_scene
from tests.conftest import make_pictures


@pytest.fixture(scope="module")
def pictures(tmp_path_factory):
    return make_pictures(tmp_path_factory.mktemp("pictures"))


def test_png_alpha_is_read_from_the_header(tmp_path):
    rgb, rgba = tmp_path / "rgb.png", tmp_path / "rgba.png"
    cv2.imwrite(str(rgb), np.zeros((8, 8, 3), np.uint8))
    cv2.imwrite(str(rgba), np.zeros((8, 8, 4), np.uint8))
    assert not png_has_alpha(rgb)
    assert png_has_alpha(rgba)


def test_sources_split_pictures_into_backgrounds_and_sprites(tmp_path):
    folders = make_pictures(tmp_path, count=15)
    train, held = find_sources(folders, "train"), find_sources(folders, "eval")
    names = [p.rsplit("/", 1)[-1] for group in train.sprites + held.sprites for p in group]
    assert sorted(names) == sorted(f"s{i}.png" for i in range(15))
    train_bg = {p for group in train.backgrounds for p in group}
    held_bg = {p for group in held.backgrounds for p in group}
    assert len(train_bg | held_bg) == 30 and not train_bg & held_bg and held_bg


def test_sources_without_backgrounds_are_a_one_line_error(tmp_path, pictures):
    with pytest.raises(UserError, match="no opaque pictures"):
        find_sources([pictures[1]], "train")
    with pytest.raises(UserError, match="no such folder"):
        find_sources([str(tmp_path / "nowhere")], "train")


@pytest.mark.parametrize("cel", [False, True])
def test_truth_motion_carries_each_visible_pixel_to_where_it_is(pictures, cel):
    """Sampling frame `to` where the exact flow of frame `f` points gives frame f back at every
    pixel visible in both (up to bilinear interpolation and brightness changes)."""
    sources = find_sources(pictures, "train")
    errors = []
    for index in range(4):
        scene = random_scene(np.random.default_rng([3, index]), sources, 64, 9, cel)
        frames, ids = render_scene(scene)
        tracks = tracks_from_arrays(**motion_arrays(scene))
        flow, visible = truth_motion(tracks, ids, 6, 1)
        ys, xs = np.mgrid[0:64, 0:64].astype(np.float32)
        back = cv2.remap(frames[1], xs + flow[..., 0], ys + flow[..., 1], cv2.INTER_LINEAR)
        interior = cv2.erode(visible.astype(np.uint8), np.ones((3, 3))) > 0
        if interior.sum() > 100:
            errors.append(np.abs(back.astype(float) - frames[6]).mean(-1)[interior].mean())
    assert errors and np.mean(errors) < 12, errors


def test_a_still_rigid_layer_has_zero_motion():
    affine = np.tile(np.array([[1.0, 0, 2], [0, 1.0, 3]]), (4, 1, 1))
    track = LayerTrack((20, 20), affine, np.zeros((4, 4, 4, 2), np.float32))
    ids = np.zeros((4, 10, 10), np.uint8)
    flow, visible = truth_motion([track], ids, 0, 3)
    assert np.abs(flow).max() < 1e-4 and visible.all()


def test_cel_shading_gives_flat_fills_inside_ink():
    yy, xx = np.mgrid[0:64, 0:64]
    disc = ((yy - 32) ** 2 + (xx - 32) ** 2 < 24**2).astype(np.float32)
    rgb = np.dstack([xx / 64, yy / 64, np.full_like(disc, 0.5)]) * disc[..., None]
    shaded = cel_shade(np.random.default_rng(0), np.dstack([rgb, disc]).astype(np.float32))
    solid = shaded[..., 3] > 0.99
    colours = {tuple(np.round(c, 3)) for c in shaded[solid][:, :3]}
    assert len(colours) <= 8  # a few fills and the ink, not a gradient
    assert (shaded[solid][:, :3].max(-1) < 0.15).any()  # dark ink lines


def test_dataset_layers_is_deterministic_and_resumes(tmp_path, pictures):
    args = ["dataset", "layers", "--clips", "3", "--size", "32", "--frames", "6", "--images",
            *pictures]  # fmt: skip
    a, b = tmp_path / "a", tmp_path / "b"
    assert main([*args, "--out", str(a)]) == 0
    assert main([*args, "--out", str(b)]) == 0
    for name in ("000000.avi", "000001.npz", "000002.avi"):
        assert (a / "clips" / name).read_bytes() == (b / "clips" / name).read_bytes()
    (a / "clips" / "000001.avi").unlink()
    assert main([*args, "--out", str(a)]) == 0  # resumes: the missing clip comes back the same
    assert (a / "clips" / "000001.avi").read_bytes() == (b / "clips" / "000001.avi").read_bytes()
    records = [json.loads(line) for line in (a / "clips.jsonl").read_text().splitlines()]
    assert [r["motion"] for r in records] == [f"clips/00000{i}.npz" for i in range(3)]
    with np.load(a / "clips" / "000000.npz") as motion:
        assert motion["ids"].shape == (6, 32, 32)
        assert motion["affine"].shape[1:] == (6, 2, 3)


def test_dataset_layers_refuses_other_parameters_and_stills(tmp_path, pictures, capsys):
    out = tmp_path / "d"
    base = ["dataset", "layers", "--out", str(out), "--size", "32", "--frames", "4", "--images"]
    assert main([*base, *pictures, "--clips", "1"]) == 0
    capsys.readouterr()
    assert main([*base, *pictures, "--clips", "1", "--cel-share", "0.9"]) == 2
    assert "other parameters" in capsys.readouterr().err
    assert main([*base, *pictures, "--clips", "1", "--stills", "4"]) == 2
    error = capsys.readouterr().err
    assert "clips only" in error and len(error.strip().splitlines()) == 1


def test_displacements_of_many_points_match_those_of_few():
    """A 600x600 frame has more points than one cv2.remap row holds (32767): same values."""
    rng = np.random.default_rng(4)
    grid = rng.normal(0, 5, (1, 4, 4, 2)).astype(np.float32)
    track = LayerTrack((600, 600), np.array([[[1, 0, 0], [0, 1, 0]]], np.float32), grid)
    points = rng.uniform(0, 599, (600, 600, 2)).astype(np.float32)
    many = track.displacement(points, 0)
    few = np.stack([track.displacement(points[i], 0) for i in range(0, 600, 97)])
    assert many.shape == (600, 600, 2) and np.allclose(many[::97], few, atol=1e-5)
