"""The learned motion prior: features, layouts, track data, training, files, and the paths it
gives flow init (interpolate.motion, interpolate.motion_training, interpolate.paths)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from interpolate.motion import NUM_FEATURES, MotionPrior, model_prior, motion_features
from interpolate.motion_training import (
    MotionModule,
    point_tracks,
    read_tracks,
    sample_layouts,
)
from interpolate.paths import PathFrames
from interpolate.shapes_prior import flat_background, match_part, rigid_parts, split_objects
from keyframe.errors import UserError
from pipeline.cli import main

ROOT = __import__("pathlib").Path(__file__).resolve().parents[1]


def straight_prior() -> MotionPrior:
    """A prior whose correction is zero: the straight line between the segment's keys."""
    prior = MotionPrior(hidden=8, depth=1)
    with torch.no_grad():
        prior.net[-1].weight.zero_()
        prior.net[-1].bias.zero_()
    return prior.eval()


def falling_tracks(count: int, frames: int, seed: int, fps: float = 24.0) -> torch.Tensor:
    """Points thrown under gravity 1.5 (the shapes world's), no floor: (count, frames, 2)."""
    g = torch.Generator().manual_seed(seed)
    start = torch.rand(count, 2, generator=g) * 0.5 + 0.25
    velocity = torch.rand(count, 2, generator=g) - 0.5
    t = torch.arange(frames) / fps
    tracks = start[:, None] + velocity[:, None] * t[None, :, None]
    tracks[..., 1] += 0.75 * t**2
    return tracks


def test_features_and_the_straight_line():
    pos = torch.tensor([[[0.0, 0.0], [0.2, 0.4], [0.6, 0.2], [0.9, 0.9]]])
    times = torch.tensor([[0.0, 0.5, 1.0, 1.5]])
    mask = torch.tensor([[0.0, 1.0, 1.0, 1.0]])
    features, line = motion_features(pos, times, mask, torch.tensor([0.75]))
    assert features.shape == (1, NUM_FEATURES)
    assert torch.allclose(line, torch.tensor([[0.4, 0.3]]))
    # u, s, the segment's length and the free-fall sag u (T - u), then the three velocities
    expected = [0.25, 0.5, 0.5, 0.0625, 0.0, 0.0, 0.8, -0.4, 0.6, 1.4]
    assert torch.allclose(features[0, -10:], torch.tensor(expected))
    # the missing key before adds nothing: changing its position changes no feature
    other = pos.clone()
    other[0, 0] = torch.tensor([0.5, 0.5])
    assert torch.equal(motion_features(other, times, mask, torch.tensor([0.75]))[0], features)
    assert torch.allclose(straight_prior()(pos, times, mask, torch.tensor([0.75])), line)


def test_layouts_lie_on_the_tracks():
    tracks = falling_tracks(2000, 20, seed=0)
    g = torch.Generator().manual_seed(1)
    pos, times, mask, query, target = sample_layouts(
        tracks, torch.full((2000,), 24.0), max_gap=6, still_rate=0.0, generator=g
    )
    frames = (times * 24).round().long()
    assert (frames >= 0).all() and (frames <= 19).all()
    span = frames[:, 2] - frames[:, 1]
    assert (span >= 2).all() and (span <= 6).all() and set(span.tolist()) == set(range(2, 7))
    before, after = mask[:, 0] > 0, mask[:, 3] > 0
    assert (
        (frames[before, 1] - frames[before, 0])
        .clamp(1, 6)
        .eq(frames[before, 1] - frames[before, 0])
        .all()
    )
    assert ((frames[after, 3] - frames[after, 2]) >= 1).all()
    assert ((frames[after, 3] - frames[after, 2]) <= 6).all()
    q = (query * 24).round().long()
    assert ((q > frames[:, 1]) & (q < frames[:, 2])).all()
    rows = torch.arange(2000)
    assert torch.equal(pos, tracks[rows[:, None], frames]) and torch.equal(target, tracks[rows, q])
    assert 0.5 < mask[:, 0].mean() < 0.8 and (mask[:, 1:3] == 1).all()
    both = before & after
    even = (frames[both, 1] - frames[both, 0] == span[both]) & (
        frames[both, 3] - frames[both, 2] == span[both]
    )
    assert 0.4 < even.float().mean() < 0.8
    # a segment as long as the track allows, with no room for a key beside it
    long = sample_layouts(tracks[:500], torch.full((500,), 24.0), max_gap=30, generator=g)
    whole = ((long[1][:, 2] - long[1][:, 1]) * 24).round() == 19
    assert whole.any() and (long[2][whole][:, [0, 3]] == 0).all()
    still = sample_layouts(tracks, torch.full((2000,), 24.0), still_rate=1.0, generator=g)
    assert (still[0] == still[4][:, None]).all()


def test_point_tracks_stay_inside_the_radius():
    tracks = falling_tracks(200, 5, seed=2)
    radius = torch.linspace(0.0, 0.2, 200)
    points = point_tracks(tracks, radius, torch.Generator().manual_seed(0))
    offset = points - tracks
    assert torch.allclose(offset, offset[:, :1].expand_as(offset), atol=1e-6)  # rigid
    assert (offset[:, 0].norm(dim=-1) <= radius + 1e-6).all()
    assert offset[-20:, 0].norm(dim=-1).mean() > 0.05


@pytest.mark.slow
def test_training_learns_gravity(one_thread):
    """A small prior trained briefly on thrown points beats the straight line by far."""
    torch.manual_seed(0)
    module = MotionModule(hidden=64, depth=2, lr=1e-2, max_gap=8, still_rate=0.0, draws=1)
    opt = torch.optim.Adam(module.parameters(), lr=1e-2)
    for step in range(300):
        tracks = falling_tracks(256, 30, seed=step)
        batch = (tracks, torch.zeros(256), torch.full((256,), 24.0))
        loss, _ = module._error(batch)
        opt.zero_grad()
        loss.backward()
        opt.step()
    g = torch.Generator().manual_seed(99)
    pos, times, mask, query, target = sample_layouts(
        falling_tracks(1000, 30, seed=1000), torch.full((1000,), 24.0), 8, still_rate=0.0,
        generator=g,
    )  # fmt: skip
    with torch.no_grad():
        learned = (module.prior(pos, times, mask, query) - target).norm(dim=-1).mean()
    line = (motion_features(pos, times, mask, query)[1] - target).norm(dim=-1).mean()
    assert learned < 0.3 * line, (learned, line)


def test_save_and_load(tmp_path):
    torch.manual_seed(0)
    prior = MotionPrior(hidden=16, depth=2).eval()
    prior.save_pretrained(tmp_path / "motion")
    loaded = MotionPrior.from_pretrained(tmp_path / "motion")
    assert loaded.config() == prior.config() and not loaded.training
    pos, times = torch.rand(3, 4, 2), torch.tensor([0.0, 0.2, 0.4, 0.6]).expand(3, 4)
    args = (pos, times, torch.ones(3, 4), torch.full((3,), 0.3))
    assert torch.allclose(loaded(*args), prior(*args), atol=1e-3)
    with pytest.raises(UserError, match="already exists"):
        prior.save_pretrained(tmp_path / "motion")
    prior.save_pretrained(tmp_path / "motion", overwrite=True, fp16=False)
    assert torch.equal(MotionPrior.from_pretrained(tmp_path / "motion")(*args), prior(*args))
    assert model_prior(tmp_path) is not None and model_prior(tmp_path / "motion") is None
    config = tmp_path / "motion" / "config.json"
    record = json.loads(config.read_text())
    config.write_text(json.dumps({**record, "version": 1}))  # 15 inputs: cannot be loaded
    with pytest.raises(UserError, match="version 1.*retrain"):
        MotionPrior.from_pretrained(tmp_path / "motion")
    config.write_text(json.dumps({"format": "other"}))
    with pytest.raises(UserError, match="unknown kind None"):
        MotionPrior.from_pretrained(tmp_path / "motion")


def test_read_tracks_errors(tiny_shapes, tmp_path):
    tracks = read_tracks(tiny_shapes, 12)
    assert len(tracks) >= 4 and all(t.shape == (12, 2) and fps == 24.0 for t, _, fps in tracks)
    assert all(r in (0.07, 0.11, 0.16) for _, r, _ in tracks)
    with pytest.raises(UserError, match="no clips.jsonl"):
        read_tracks(tmp_path, 12)
    with pytest.raises(UserError, match="no object tracks of 13"):
        read_tracks(tiny_shapes, 13)
    (tmp_path / "clips.jsonl").write_text('{"fps": 24, "objects": [{"centres": [1, 2]}]}\n')
    with pytest.raises(UserError, match=r"clips.jsonl:1: objects\[0\].centres"):
        read_tracks(tmp_path, 2)


def test_train_and_export_commands(tiny_shapes, tmp_path, one_thread):
    config = str(ROOT / "configs" / "motion" / "tiny.yaml")
    root = tmp_path / "run"
    args = ["train", "motion", "fit", "--config", config, "--data.data", str(tiny_shapes)]
    args += ["--data.num_frames", "12", "--model.max_gap", "3", "--trainer.max_steps", "4"]
    args += ["--trainer.default_root_dir", str(root), "--trainer.val_check_interval", "2"]
    assert main(args) == 0
    ckpt = next(root.rglob("last.ckpt"))
    out = tmp_path / "export"
    assert main(["export", "motion", str(ckpt), "--out", str(out)]) == 0
    prior = MotionPrior.from_pretrained(out)
    assert prior.config() == {"hidden": 32, "depth": 2, "scale": 20.0}
    assert main(["export", "motion", str(ckpt), "--out", str(out)]) == 2  # no overwrite


def _ball(size: int, centre: tuple[float, float], background=(20, 20, 60)) -> np.ndarray:
    image = np.zeros((size, size, 3), dtype=np.uint8) + np.array(background, dtype=np.uint8)
    yy, xx = np.mgrid[0:size, 0:size]
    inside = (xx + 0.5 - centre[0]) ** 2 + (yy + 0.5 - centre[1]) ** 2 <= 4.5**2
    image[inside] = (230, 200, 40)
    return image


def _centre(image: np.ndarray) -> np.ndarray:
    yy, xx = np.nonzero(image[..., 0] > 150)
    return np.array([xx.mean() + 0.5, yy.mean() + 0.5])


def test_paths_follow_the_prior():
    """A straight-line prior moves pixels as the two-key straight path does, even with keys on
    both sides; a prior that is 2 px off to the right moves the ball 2 px to the right."""
    keys = np.stack([_ball(48, c) for c in ((10, 10), (20, 30), (34, 16), (40, 40))])
    positions = [0, 8, 16, 24]
    straight = PathFrames(keys, positions, motion=straight_prior())
    pair = PathFrames(keys[1:3], [8, 16])
    for frame in (10, 12, 14):
        expected = np.array([20, 30]) + (frame - 8) / 8 * np.array([14, -14])
        assert np.abs(_centre(straight(frame)) - expected).max() < 0.6
        assert np.abs(_centre(straight(frame)) - _centre(pair(frame))).max() < 0.6
    shifted = straight_prior()
    with torch.no_grad():
        shifted.net[-1].bias[0] = 2 / 48 * shifted.scale
    frames = PathFrames(keys, positions, motion=shifted)
    assert np.abs(_centre(frames(12)) - _centre(straight(12)) - [2, 0]).max() < 0.6


def test_still_pixels_skip_the_prior():
    keys = np.stack([_ball(32, (16, 16))] * 3)
    frames = PathFrames(keys, [0, 4, 8], motion=straight_prior())
    parts, pos, _, _ = frames.prior_inputs(0, 1)
    assert (parts == -1).all() and len(pos) == 0
    assert np.array_equal(frames(2), keys[0])


def test_rigid_parts():
    flows = np.zeros((10, 12, 4))
    flows[1:4, 1:4] = [3.0, 1.0, 6.2, 2.0]  # one object
    flows[6:9, 8:11] = [3.0, 1.0, 6.0, 2.0]  # the same motion, elsewhere: its own part
    flows[6:9, 1:3] = [-2.0, 0.0, -4.0, 0.0]
    flows[2, 2] = [3.2, 1.1, 5.9, 2.1]  # within a px of its object's flows
    moving = np.linalg.norm(flows[..., :2], axis=-1) > 0.25
    parts = rigid_parts(flows, moving)
    assert (parts[~moving] == -1).all()
    assert len(np.unique(parts[1:4, 1:4])) == 1 and len(np.unique(parts[6:9, 8:11])) == 1
    assert len(np.unique(parts[moving])) == 3 and parts.max() == 2


def test_a_part_moves_as_one():
    """Every pixel of a moving ball gets the same shift from the prior, even though the prior's
    correction depends on where a point is (here: more the lower it is)."""
    prior = straight_prior()
    with torch.no_grad():
        prior.net[0].weight.zero_()
        prior.net[0].weight[:, 1] = 1.0  # first feature slot 1: the point's y at the start key
        prior.net[-1].bias.zero_()
        prior.net[-1].weight.fill_(0.5)
    keys = np.stack([_ball(48, c) for c in ((10, 10), (20, 30), (34, 16))])
    frames = PathFrames(keys, [0, 8, 16], motion=prior)
    parts = frames.prior_inputs(1, 2)[0]
    ball = _ball(48, (20, 30))[..., 0] > 150
    shift = frames.shift(1, 2, 4)
    assert (parts[ball] == parts[ball][0]).all()
    assert np.ptp(shift[ball], axis=0).max() < 1e-9 and np.abs(shift[ball][0]).max() > 1


def _square(image: np.ndarray, x: int, y: int, side: int, colour) -> np.ndarray:
    image = image.copy()
    image[y : y + side, x : x + side] = colour
    return image


def test_flat_background_and_foreground():
    """A flat background's colour is found however the objects move; the pixels around a ball
    that the flow drags along are background (foreground 0), the ball is foreground."""
    keys = np.stack([_ball(48, c) for c in ((10, 10), (30, 20), (40, 40))])
    assert np.allclose(flat_background(keys), (20, 20, 60))
    noise = np.random.default_rng(0).integers(0, 256, (2, 32, 32, 3), dtype=np.uint8)
    assert flat_background(noise) is None
    foreground = PathFrames(keys, [0, 8, 16], motion=straight_prior()).foreground(0)
    ball = keys[0][..., 0] > 150
    assert (foreground[ball] > 0.99).all() and (foreground[~ball] < 0.01).all()


def test_match_part_finds_far_shifts_to_a_fraction_of_a_pixel():
    """A ball 22 px away is found by its own pixels (sub-pixel by the cost's parabola), with a
    fit near 1; a colour that is not in the other image fits badly."""
    here, there = _ball(48, (12.0, 14.0)), _ball(48, (34.3, 30.6))
    mask = here[..., 0] > 150
    shift, fit = match_part(here, there, mask, np.zeros(2))
    assert np.abs(shift - [22.3, 16.6]).max() < 0.35 and fit > 0.8
    _, fit = match_part(here, _ball(48, (34.3, 30.6), background=(200, 0, 0)), ~mask, np.zeros(2))
    assert fit < 0.1


def test_split_objects_parts_touching_objects_not_edges():
    """Two flat squares that touch are one part until split_objects gives each its own (the
    pixels between go with the nearer); a line of one anti-aliased colour along an edge is not
    an object."""
    image = np.full((24, 24, 3), 40, np.uint8)
    image = _square(image, 3, 3, 6, (250, 140, 30))
    image = _square(image, 10, 3, 6, (30, 80, 250))
    image[3:9, 9] = (140, 110, 140)  # the seam between them
    image[9, 3:9] = (145, 90, 35)  # an anti-aliased bottom edge: one colour, a line
    solid = np.abs(image.astype(int) - 40).sum(-1) > 30
    parts = np.where(solid, 0, -1)
    out = split_objects(parts, image, solid)
    left, right = out[3:9, 3:9], out[3:9, 10:16]
    assert len(np.unique(left)) == 1 and len(np.unique(right)) == 1 and left[0, 0] != right[0, 0]
    assert (out[9, 3:9] == left[0, 0]).all()  # the edge goes with its square
    assert len(np.unique(out[out >= 0])) == 2
    one = np.where(solid & (image[..., 2] < 200), 0, -1)
    assert np.array_equal(split_objects(one, image, solid), one)


def test_a_fast_object_is_matched_where_the_flow_loses_it():
    """A square that jumps 30 px between keys gets its true positions at all three keys as the
    prior's input, to a fraction of a pixel, even where the flow (here: made to fall short by
    half and to disagree inside the square) is wrong."""
    background = np.full((64, 64, 3), (30, 60, 30), np.uint8)
    corners = [(4, 40), (34, 10), (50, 44)]
    keys = np.stack([_square(background, x, y, 8, (240, 240, 240)) for x, y in corners])
    frames = PathFrames(keys, [0, 16, 32], motion=straight_prior())
    square = keys[0][..., 0] > 200
    noise = np.random.default_rng(0).uniform(-3, 3, (64, 64, 2))
    for other in (1, 2):
        wrong = np.zeros((64, 64, 2), np.float32)
        wrong[square] = 0.5 * np.subtract(corners[other], corners[0]) + noise[square]
        frames._flows[0, other] = wrong
    parts, pos, _, mask = frames.prior_inputs(0, 1)
    part = parts[square][0]
    assert part >= 0 and (parts[square] == part).all()
    centres = np.array(corners, float) + 4.0
    assert np.abs(pos[part, 1:].numpy() * 64 - centres).max() < 0.3
    assert mask[part].tolist() == [0.0, 1.0, 1.0, 1.0]
