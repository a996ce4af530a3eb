"""The judge against rendered ground truth: it passes true scenes and names what is wrong."""

import dataclasses
import math

import cv2
import numpy as np
import pytest

from keyframe.errors import UserError
from pipeline.judge import Detection, coverage, detect_objects, judge, size_word
from pipeline.shapes import (
    Scene,
    SceneObject,
    allowed_colours,
    random_still_scene,
    render_still,
    still_caption,
)


def scenes(count, n, seed):
    """n still scenes with exactly `count` objects, first objects cycling through the cells."""
    rng = np.random.default_rng(seed)
    out = []
    while len(out) < n:
        scene = random_still_scene(rng, cell=len(out) % 9, max_objects=count)
        if len(scene.objects) == count:
            out.append(scene)
    return out


def correct_rate(scene_list, size):
    return np.mean([judge(render_still(s, size), still_caption(s)).correct for s in scene_list])


def test_ground_truth_single_objects_at_64px():
    assert correct_rate(scenes(1, 300, seed=1), 64) >= 0.99


def test_ground_truth_two_objects_at_64px():
    assert correct_rate(scenes(2, 300, seed=2), 64) >= 0.95


def test_ground_truth_at_32px():
    # Measured 100% for both on 300 scenes; a small triangle is 2.2 px in radius here.
    assert correct_rate(scenes(1, 100, seed=3), 32) >= 0.95
    assert correct_rate(scenes(2, 100, seed=4), 32) >= 0.95


def test_centres_and_radii_match_the_scene():
    for size in (32, 64):
        for scene in scenes(2, 40, seed=5):
            seen = {d.colour: d for d in detect_objects(render_still(scene, size))}
            assert set(seen) == {o.colour for o in scene.objects}
            for obj in scene.objects:
                d = seen[obj.colour]
                assert math.dist((d.cx, d.cy), (obj.x, obj.y)) * size < 0.25
                assert d.radius == pytest.approx(obj.radius, rel=0.16)
                assert d.shape == obj.shape and d.size_word == obj.size


def test_a_triangles_centre_is_its_circumcentre():
    obj = SceneObject("triangle", "yellow", "large", 0.43, 0.57)
    (d,) = detect_objects(render_still(Scene("navy", (obj,)), 128))
    assert d.shape == "triangle"
    assert (d.cx, d.cy) == pytest.approx((0.43, 0.57), abs=0.1 / 128)


def test_size_words_split_between_the_spec_radii():
    assert [size_word(r) for r in (0.05, 0.07, 0.085, 0.11, 0.13, 0.16, 0.3)] == [
        "small",
        "small",
        "small",
        "medium",
        "medium",
        "large",
        "large",
    ]


def test_coverage_is_the_shapes_area():
    for shape, factor in (("circle", math.pi), ("square", 2.0), ("triangle", 3 * 3**0.5 / 4)):
        cover = coverage(shape, 0.5, 0.5, 0.2, 64, (0, 0, 64, 64))
        assert cover.sum() / 64**2 == pytest.approx(factor * 0.2**2, rel=0.02)  # 1/8 px samples


BASE = Scene(
    "navy",
    (
        SceneObject("circle", "red", "large", 0.2, 0.2),
        SceneObject("square", "yellow", "medium", 0.8, 0.5),
    ),
)


def with_object(scene, index, **change):
    objects = list(scene.objects)
    objects[index] = dataclasses.replace(objects[index], **change)
    return dataclasses.replace(scene, objects=tuple(objects))


@pytest.mark.parametrize(
    "shown, failures",
    [
        (BASE, ()),
        (with_object(BASE, 0, colour="green"), ("colour",)),
        (with_object(BASE, 1, shape="triangle"), ("shape",)),
        (with_object(BASE, 1, shape="circle"), ("shape",)),
        (with_object(BASE, 0, size="small"), ("size",)),
        (with_object(BASE, 1, size="large"), ("size",)),
        (with_object(BASE, 0, x=0.5, y=0.8), ("position",)),
        (dataclasses.replace(BASE, background="teal"), ("background",)),
        (
            dataclasses.replace(
                BASE, objects=(*BASE.objects, SceneObject("triangle", "white", "small", 0.5, 0.5))
            ),
            ("count",),
        ),
    ],
)
def test_wrong_images_fail_on_the_right_attribute(shown, failures):
    verdict = judge(render_still(shown, 64), still_caption(BASE))
    assert verdict.failures == failures
    assert verdict.correct == (failures == ())


def test_a_missing_object_fails_count_and_that_object_only():
    shown = dataclasses.replace(BASE, objects=BASE.objects[:1])
    verdict = judge(render_still(shown, 64), still_caption(BASE))
    assert not verdict.correct and "count" in verdict.failures
    assert verdict.count_seen == 1
    assert verdict.objects[0].correct
    assert verdict.objects[1].detected is None and not verdict.objects[1].correct


def test_the_verdict_names_what_it_saw():
    verdict = judge(render_still(BASE, 64), still_caption(BASE))
    assert verdict.background_seen == "navy"
    assert [
        (o.detected.colour, o.detected.shape, o.detected.position) for o in verdict.objects
    ] == [
        ("red", "circle", "top left"),
        ("yellow", "square", "right"),
    ]


def test_overlapping_objects_are_split_by_colour():
    # The later (front) object covers part of the earlier one.
    back = SceneObject("square", "blue", "large", 0.45, 0.5)
    front = SceneObject("circle", "yellow", "medium", 0.58, 0.55)
    seen = {d.colour: d for d in detect_objects(render_still(Scene("beige", (back, front)), 64))}
    assert set(seen) == {"blue", "yellow"}
    assert seen["yellow"].shape == "circle" and seen["yellow"].size_word == "medium"
    assert math.dist((seen["yellow"].cx, seen["yellow"].cy), (0.58, 0.55)) * 64 < 0.25
    assert seen["blue"].area < seen["yellow"].area + 2 * 0.16**2  # only the visible part


def degrade(image, rng, noise, blur, shift):
    x = cv2.GaussianBlur(image.astype(np.float32), (0, 0), blur) if blur else image.astype(float)
    x = x + rng.uniform(-shift, shift, 3) + rng.normal(0, noise, x.shape)
    return np.clip(np.round(x), 0, 255).astype(np.uint8)


def test_soft_noisy_off_palette_images_still_pass():
    # Generated frames are never exact renders: a little blur, noise and colour drift.
    rng = np.random.default_rng(7)
    shown = scenes(2, 60, seed=8)
    verdicts = [
        judge(degrade(render_still(s, 64), rng, noise=5, blur=0.7, shift=12), still_caption(s))
        for s in shown
    ]
    assert np.mean([v.correct for v in verdicts]) >= 0.95


def test_faint_ghosts_show_only_when_asked_for():
    a = SceneObject("circle", "orange", "medium", 0.3, 0.4)
    frames = [render_still(Scene("navy", (dataclasses.replace(a, x=x),)), 64) for x in (0.3, 0.7)]
    mix = np.round(0.65 * frames[0] + 0.35 * frames[1]).astype(np.uint8)
    assert [d.colour for d in detect_objects(mix)] == ["orange"]
    ghosts = detect_objects(mix, min_opacity=0.0)
    assert [d.colour for d in ghosts] == ["orange", "orange"]
    assert sorted(round(d.opacity, 1) for d in ghosts) == [0.3, 0.7]


def test_every_allowed_colour_is_seen_on_every_background():
    for background in ("navy", "gray", "beige", "teal", "maroon", "forest", "sky", "pink"):
        for colour in allowed_colours(background):
            obj = SceneObject("circle", colour, "small", 0.5, 0.5)
            (d,) = detect_objects(render_still(Scene(background, (obj,)), 32))
            assert isinstance(d, Detection) and d.colour == colour


def test_an_empty_frame_has_no_objects():
    verdict = judge(
        render_still(Scene("sky", ()), 64), "a small red circle in the center on a sky background"
    )
    assert verdict.count_seen == 0 and verdict.failures == (
        "count",
        "colour",
        "shape",
        "size",
        "position",
    )


@pytest.mark.parametrize(
    "image, caption, words",
    [
        (
            np.zeros((64, 48, 3), np.uint8),
            "a small red circle in the center on a navy background",
            "square",
        ),
        (
            np.zeros((16, 16, 3), np.uint8),
            "a small red circle in the center on a navy background",
            "32 px",
        ),
        (
            np.zeros((64, 64, 3), np.uint8),
            "a small red circle bounces to the left on a navy background",
            "still",
        ),
        (np.zeros((64, 64, 3), np.uint8), "a dog on a skateboard", "still caption"),
    ],
)
def test_bad_input_is_a_user_error(image, caption, words):
    with pytest.raises(UserError, match=words):
        judge(image, caption)
