"""Frame plans: counts, key frames, holds, cuts and loops; the animatic preview."""

from __future__ import annotations

from itertools import pairwise
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.shotlist import load_shotlist, parse_shotlist
from pipeline.timeline import (
    Segment,
    animatic_frames,
    key_frames,
    make_plan,
    plan_frames,
    tween_bounds,
)

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "shapes_film.yaml"


def assert_tiles(plan):
    """Segments cover every frame once, in order; each panel starts with a hold at its key."""
    assert plan.segments[0].start_frame == 0
    assert plan.segments[-1].end_frame == plan.num_frames
    for a, b in pairwise(plan.segments):
        assert a.end_frame == b.start_frame
    assert all(s.num_frames > 0 for s in plan.segments)
    assert [s.start_frame for s in plan.segments if s.kind == "hold"] == key_frames(plan)


def colours(count: int) -> list[np.ndarray]:
    return [np.full((4, 6, 3), 20 * (i + 1), np.uint8) for i in range(count)]


def test_example_film_plan():
    plan = plan_frames(load_shotlist(EXAMPLE))
    assert plan.num_frames == 168 and plan.fps == 24 and not plan.loop
    assert key_frames(plan) == [0, 36, 60, 108, 144]
    assert plan.segments == (
        Segment(0, 12, "hold", 0, 0),  # hold: 0.5s
        Segment(12, 36, "tween", 0, 1),
        Segment(36, 37, "hold", 1, 1),
        Segment(37, 60, "tween", 1, 2),
        Segment(60, 61, "hold", 2, 2),
        Segment(61, 108, "cut", 2, 3),  # transition: cut
        Segment(108, 109, "hold", 3, 3),
        Segment(109, 144, "tween", 3, 4),
        Segment(144, 145, "hold", 4, 4),
        Segment(145, 168, "cut", 4, None),  # the film ends
    )
    assert_tiles(plan)


def test_loop_tweens_back_to_the_first_panel():
    text = (
        "loop: true\npanels:\n  - {prompt: a, duration: 10, hold: 3}\n  - {prompt: b, duration: 6}"
    )
    shots = parse_shotlist(text)
    plan = plan_frames(shots)
    assert plan.loop and plan.num_frames == 16
    assert key_frames(plan) == [0, 10]
    assert plan.segments[-1] == Segment(11, 16, "tween", 1, 0)
    assert tween_bounds(plan, plan.segments[-1]) == (10, 0), "frame 16 wraps to frame 0"
    assert tween_bounds(plan, plan.segments[1]) == (2, 10)
    with pytest.raises(ValueError, match="not a tween"):
        tween_bounds(plan, plan.segments[0])


def test_holds_and_short_panels():
    plan = make_plan([5, 1, 4, 3], [5, 0, 1, 0], ["cut", "tween", "tween", "cut"])
    assert key_frames(plan) == [0, 5, 6, 10]
    assert plan.segments == (
        Segment(0, 5, "hold", 0, 0),  # hold == duration: still for the whole panel
        Segment(5, 6, "hold", 1, 1),  # one frame long: just the key, straight into panel 3
        Segment(6, 7, "hold", 2, 2),  # hold 1 = just the key
        Segment(7, 10, "tween", 2, 3),
        Segment(10, 11, "hold", 3, 3),
        Segment(11, 13, "cut", 3, None),
    )
    assert_tiles(plan)


@pytest.mark.parametrize(
    "args,match",
    [
        (([], [], []), "at least one"),
        (([4, 4], [0], ["cut", "cut"]), "one duration, hold and transition"),
        (([0], [0], ["cut"]), "bad timing"),
        (([4], [5], ["cut"]), "bad timing"),
        (([4], [0], ["fade"]), "bad timing"),
        (([4, 4], [0, 0], ["cut", "tween"]), "only tween when looping"),
    ],
)
def test_make_plan_rejects_bad_timing(args, match):
    with pytest.raises(ValueError, match=match):
        make_plan(*args)
    with pytest.raises(ValueError, match="at least 2 panels"):
        make_plan([4], [0], ["tween"], loop=True)


@st.composite
def timings(draw):
    count = draw(st.integers(1, 8))
    durations = draw(st.lists(st.integers(1, 40), min_size=count, max_size=count))
    holds = [draw(st.integers(0, d)) for d in durations]
    loop = count > 1 and draw(st.booleans())
    transitions = draw(st.lists(st.sampled_from(["tween", "cut"]), min_size=count, max_size=count))
    if not loop:
        transitions[-1] = "cut"
    return durations, holds, transitions, loop


@settings(max_examples=60, deadline=None)
@given(timings())
def test_plan_properties(timing):
    durations, holds, transitions, loop = timing
    plan = make_plan(durations, holds, transitions, loop=loop)
    assert plan.num_frames == sum(durations)
    assert key_frames(plan) == [sum(durations[:i]) for i in range(len(durations))]
    assert_tiles(plan)
    for segment in plan.segments:
        panel = segment.from_panel
        if segment.kind == "hold":
            assert segment.num_frames == max(1, holds[panel])
        else:
            assert segment.kind == transitions[panel]
            assert segment.end_frame == plan.keys[panel] + durations[panel]
            expected_next = panel + 1 if panel + 1 < len(durations) else (0 if loop else None)
            assert segment.to_panel == expected_next
    frames = list(animatic_frames(plan, colours(len(durations))))
    assert len(frames) == plan.num_frames


def test_animatic_holds_each_panel_for_its_duration_and_cuts():
    plan = make_plan([3, 2, 4], [0, 0, 2], ["tween", "cut", "cut"])
    images = colours(3)
    frames = list(animatic_frames(plan, images))
    shown = [int(frame[0, 0, 0]) for frame in frames]
    assert shown == [20, 20, 20, 40, 40, 60, 60, 60, 60]
    np.testing.assert_array_equal(frames[5], images[2])
    with pytest.raises(ValueError, match="read-only"):
        frames[0][0, 0, 0] = 1
    images[0][0, 0, 0] = 1  # the caller's own arrays stay writable


def test_animatic_dissolve_blends_tweens_only():
    plan = make_plan([5, 3, 2], [1, 0, 0], ["tween", "cut", "tween"], loop=True)
    images = [np.full((2, 2, 3), v, np.uint8) for v in (0, 200, 100)]
    shown = [int(f[0, 0, 0]) for f in animatic_frames(plan, images, dissolve=True)]
    # tween 0->1 over frames 1..4 (known at 0 and 5): 200 * t for t = 1/5 .. 4/5
    assert shown[:5] == [0, 40, 80, 120, 160]
    assert shown[5:8] == [200, 200, 200], "a cut holds"
    assert shown[8:] == [100, 50], "the loop's last tween fades back to panel 1"


def test_animatic_rejects_mismatched_images():
    plan = make_plan([2, 2], [0, 0], ["tween", "cut"])
    with pytest.raises(ValueError, match="2 panels but 1 images"):
        list(animatic_frames(plan, colours(1)))
    with pytest.raises(ValueError, match="one size"):
        list(animatic_frames(plan, [colours(1)[0], np.zeros((5, 6, 3), np.uint8)]))
