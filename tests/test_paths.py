"""Flow between distant keys (interpolate.flow.robust_flow) and curved motion paths
(interpolate.paths): the frames flow-initialised sampling starts from."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from interpolate.flow import FlowFrames, match_flow, robust_flow
from interpolate.paths import PathFrames, path_coefficients
from interpolate.splatting import splat
from pipeline.shapes import Scene, SceneObject, render_still

SIZE = 64
YELLOW = np.array([245, 215, 40])


def _frame(x: float, y: float, size: str = "small", background: str = "navy") -> np.ndarray:
    """A shapes-world still with one yellow circle centred at (x, y) px."""
    obj = SceneObject("circle", "yellow", size, x / SIZE, y / SIZE)
    return render_still(Scene(background, (obj,)), SIZE)


def _blobs(frame: np.ndarray) -> list[tuple[float, float]]:
    """Centres (x, y) in px of the yellow blobs (pixels at least half yellow), largest first."""
    navy = np.array([20, 30, 80])
    yellowish = np.abs(frame - YELLOW).sum(-1) < 0.5 * np.abs(YELLOW - navy).sum()
    count, labels, stats, centroids = cv2.connectedComponentsWithStats(yellowish.astype(np.uint8))
    order = sorted(range(1, count), key=lambda i: -stats[i, cv2.CC_STAT_AREA])
    return [tuple(centroids[i] + 0.5) for i in order if stats[i, cv2.CC_STAT_AREA] >= 4]


def test_path_coefficients_recover_velocity_and_acceleration():
    rng = np.random.default_rng(0)
    v, a = rng.normal(size=(2, 5, 5, 2))
    for t_near, t_far in ((8, -8), (8, 16), (-5, 7), (3, -12)):
        move = lambda t: v * t + a * t * t / 2  # noqa: E731
        got_v, got_a = path_coefficients(move(t_near), t_near, move(t_far), t_far)
        np.testing.assert_allclose(got_v, v, atol=1e-9)
        np.testing.assert_allclose(got_a, a, atol=1e-9)


def test_splat_spreads_a_pixel_bilinearly_and_drops_what_leaves_the_frame():
    image = np.zeros((4, 4, 1))
    image[1, 1] = 10.0
    shift = np.zeros((4, 4, 2))
    shift[1, 1] = (1.5, 0.25)  # lands at x 2.5, y 1.25
    shift[0, 0] = (-3.0, 0.0)  # leaves the frame
    acc, total = np.zeros((4, 4, 1)), np.zeros((4, 4))
    splat(image, shift, np.full((4, 4), 2.0), acc, total)
    assert acc[1, 2, 0] == pytest.approx(10 * 2 * 0.5 * 0.75)
    assert acc[2, 3, 0] == pytest.approx(10 * 2 * 0.5 * 0.25)
    assert acc.sum() == pytest.approx(20.0)
    assert total.sum() == pytest.approx(2.0 * 15)  # 16 pixels, one gone
    assert total[0, 0] == 0.0  # nothing else lands there


def test_robust_flow_finds_a_small_object_that_moved_far():
    start, end = (14.0, 12.0), (44.0, 38.0)  # 40 px for an object 9 px across
    a, b = _frame(*start), _frame(*end)
    flow = robust_flow(a, b)
    assert np.linalg.norm(flow[12, 14] - np.subtract(end, start)) < 1.5
    coarse = match_flow(a, b)  # the candidate that finds it: 2 px steps at 64 px
    assert np.linalg.norm(coarse[12, 14] - np.subtract(end, start)) < 2.5
    far_from_both = flow[58, 4], flow[4, 58]
    assert all(np.linalg.norm(f) < 0.5 for f in far_from_both)  # the still background


def test_paths_follow_a_parabola_through_three_keys():
    """Constant acceleration (a thrown ball): the frames between keys lie on the parabola through
    them, where straight-line flow cuts the corner."""
    v, g = np.array([2.0, -3.0]), np.array([0.0, 0.5])
    start = np.array([10.0, 30.0])
    at = lambda t: start + v * t + g * t * t / 2  # noqa: E731
    positions = [0, 8, 16]
    keys = np.stack([_frame(*at(t)) for t in positions])
    paths = PathFrames(keys, positions)
    for t in (4, 12):
        blobs = _blobs(paths(t))
        assert len(blobs) == 1, f"frame {t}: {blobs}"
        assert np.linalg.norm(np.subtract(blobs[0], at(t))) < 1.0
        chord = (at(t - 4) + at(t + 4)) / 2  # where a straight path between the keys goes
        assert np.linalg.norm(chord - at(t)) > 3.5
    for t, key in zip(positions, keys, strict=True):
        assert np.array_equal(paths(t), key)


def test_two_keys_give_a_straight_path_and_the_ends_hold():
    keys = np.stack([_frame(12.0, 20.0, "medium"), _frame(50.0, 40.0, "medium")])
    paths = PathFrames(keys, [2, 10])
    blobs = _blobs(paths(6))
    assert len(blobs) == 1 and np.linalg.norm(np.subtract(blobs[0], (31.0, 30.0))) < 1.0
    assert np.array_equal(paths(0), keys[0]) and np.array_equal(paths(12), keys[1])


def test_where_no_pixel_is_trusted_the_backward_warp_fills_in(monkeypatch):
    import interpolate.paths as paths_module

    keys = np.stack([_frame(20.0, 20.0), _frame(40.0, 40.0)])
    fallback = FlowFrames(keys, [0, 4], flows=PathFrames(keys, [0, 4])._pair)
    monkeypatch.setattr(paths_module, "MIN_TRUST", 2.0)  # trust is at most 1: none splatted
    paths = PathFrames(keys, [0, 4])
    for t in (1, 2, 3):
        assert np.array_equal(paths(t), fallback(t))
    monkeypatch.setattr(paths_module, "MIN_TRUST", 1e-3)
    assert len(_blobs(PathFrames(keys, [0, 4])(2))) == 1
