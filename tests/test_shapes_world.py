"""The shapes world against shapes_world.md: the spec's numbers are restated here, not imported."""

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.shapes import (
    Description,
    ObjectWords,
    Scene,
    SceneObject,
    allowed_colours,
    clip_caption,
    format_caption,
    parse_caption,
    random_clip_scene,
    random_still_scene,
    render_clip,
    render_frame,
    render_still,
    simulate,
    still_caption,
    world,
)

# Straight from shapes_world.md.
SPEC_BACKGROUNDS = {
    "navy": (20, 30, 80),
    "gray": (110, 110, 110),
    "beige": (225, 210, 170),
    "teal": (20, 110, 110),
    "maroon": (100, 20, 40),
    "forest": (25, 80, 35),
    "sky": (150, 200, 240),
    "pink": (240, 180, 200),
}
SPEC_COLOURS = {
    "red": (230, 40, 40),
    "green": (60, 200, 70),
    "blue": (40, 90, 230),
    "yellow": (245, 215, 40),
    "purple": (150, 60, 210),
    "orange": (250, 140, 30),
    "white": (250, 250, 250),
    "black": (15, 15, 15),
}
SPEC_SIZES = {"small": 0.07, "medium": 0.11, "large": 0.16}
SPEC_G, SPEC_FLOOR_E, SPEC_FPS = 1.5, 0.85, 24.0
SPEC_GRID = [
    ["at the top left", "at the top", "at the top right"],
    ["on the left", "in the center", "on the right"],
    ["at the bottom left", "at the bottom", "at the bottom right"],
]


def spec_phrase(x, y):
    return SPEC_GRID[min(int(y * 3), 2)][min(int(x * 3), 2)]


def spec_direction(vx):
    return "in place" if abs(vx) < 0.1 else ("to the left" if vx < 0 else "to the right")


def rgb_distance(a, b):
    return math.sqrt(sum((p - q) ** 2 for p, q in zip(a, b, strict=True)))


def measured_centre(frame, colour, background):
    """Centre of an object from a rendered frame: coverage-weighted centroid, in canvas units."""
    c, bg = np.array(colour, float), np.array(background, float)
    alpha = ((frame.astype(float) - bg) @ (c - bg)) / ((c - bg) @ (c - bg))
    alpha = np.clip(alpha, 0, 1)
    size = frame.shape[0]
    ys, xs = np.mgrid[0:size, 0:size] + 0.5
    return (alpha * xs).sum() / alpha.sum() / size, (alpha * ys).sum() / alpha.sum() / size


def test_palette_and_sizes_are_the_spec():
    assert world.BACKGROUNDS == SPEC_BACKGROUNDS
    assert world.COLOURS == SPEC_COLOURS
    assert world.SIZES == SPEC_SIZES
    assert set(world.SHAPES) == {"circle", "square", "triangle"}
    assert (world.GRAVITY, world.FLOOR_RESTITUTION, world.FPS) == (SPEC_G, SPEC_FLOOR_E, SPEC_FPS)


def test_colours_close_to_the_background_are_excluded():
    excluded = 0
    for bg, bg_rgb in SPEC_BACKGROUNDS.items():
        expected = {c for c, rgb in SPEC_COLOURS.items() if rgb_distance(rgb, bg_rgb) >= 80}
        assert set(allowed_colours(bg)) == expected
        excluded += len(SPEC_COLOURS) - len(expected)
    assert excluded > 0  # e.g. black on navy: the rule really bites


def test_generated_scenes_never_use_a_colour_close_to_the_background():
    for seed in range(400):
        rng = np.random.default_rng(seed)
        for scene in (random_clip_scene(rng), random_still_scene(rng)):
            for obj in scene.objects:
                bg = SPEC_BACKGROUNDS[scene.background]
                assert rgb_distance(SPEC_COLOURS[obj.colour], bg) >= 80


def test_clip_start_states_follow_the_spec():
    counts = set()
    for seed in range(300):
        scene = random_clip_scene(np.random.default_rng(seed))
        counts.add(len(scene.objects))
        for o in scene.objects:
            r = SPEC_SIZES[o.size]
            assert r <= o.x <= 1 - r and 0.15 <= o.y <= 0.75
            assert -0.6 <= o.vx <= 0.6 and -1.0 <= o.vy <= 0.5
    assert counts == {1, 2}


@pytest.mark.parametrize("seed", range(12))
def test_colours_at_object_centres_equal_the_palette(seed):
    scene = random_still_scene(np.random.default_rng(seed), cell=seed % 9)
    image = render_still(scene, 64)
    for obj in scene.objects:
        row, col = int(obj.y * 64), int(obj.x * 64)
        assert tuple(image[row, col]) == SPEC_COLOURS[obj.colour]
    corners = [image[0, 0], image[0, -1], image[-1, 0], image[-1, -1]]
    assert any(tuple(c) == SPEC_BACKGROUNDS[scene.background] for c in corners)


def test_edges_are_anti_aliased_and_any_size_works():
    obj = SceneObject("circle", "white", "large", 0.5, 0.5)
    for size in (16, 17, 33):
        image = render_frame("navy", [obj], None, size)
        assert image.shape == (size, size, 3) and image.dtype == np.uint8
    image = render_frame("navy", [obj], None, 64)
    levels = {tuple(p) for p in image.reshape(-1, 3)}
    assert len(levels) > 4  # coverage-weighted blends, not just two colours


@pytest.mark.parametrize("shape", ["circle", "square", "triangle"])
def test_shapes_have_the_spec_geometry(shape):
    """The rendered area matches the shape with circumradius r (circle, square, equilateral)."""
    r = SPEC_SIZES["large"]
    area = {
        "circle": math.pi * r * r,
        "square": 2 * r * r,  # side r * sqrt(2)
        "triangle": 3 * math.sqrt(3) / 4 * r * r,
    }[shape]
    frame = render_frame("navy", [SceneObject(shape, "white", "large", 0.5, 0.5)], None, 256)
    alpha = (frame[..., 0].astype(float) - 20) / (250 - 20)
    assert alpha.sum() / 256**2 == pytest.approx(area, rel=0.01)
    x, y = measured_centre(frame, SPEC_COLOURS["white"], SPEC_BACKGROUNDS["navy"])
    assert abs(x - 0.5) * 256 < 0.1 and abs(y - 0.5) * 256 < 0.1
    if shape == "triangle":  # pointing up: more ink below the centre's row than the apex above
        rows = alpha.sum(axis=1)
        assert rows[140:160].sum() > rows[96:116].sum()


def test_objects_partly_off_the_canvas_are_cut_not_moved():
    r = SPEC_SIZES["large"]
    corner = render_frame("navy", [SceneObject("circle", "white", "large", 0.0, 0.0)], None, 256)
    alpha = (corner[..., 0].astype(float) - 20) / (250 - 20)
    assert alpha.sum() / 256**2 == pytest.approx(math.pi * r * r / 4, rel=0.01)
    above = SceneObject("square", "white", "large", 0.5, -0.5)
    assert np.all(render_frame("navy", [above], None, 32) == SPEC_BACKGROUNDS["navy"])


def test_position_words_match_the_grid_cell():
    seen = set()
    for seed in range(90):
        scene = random_still_scene(np.random.default_rng(seed), cell=seed % 9)
        caption = still_caption(scene)
        image = render_still(scene, 96)
        for obj in scene.objects:
            phrase = spec_phrase(obj.x, obj.y)
            assert f"{obj.size} {obj.colour} {obj.shape} {phrase}" in caption
            seen.add(phrase)
        if len(scene.objects) == 1:  # the picture agrees: the drawn object sits in that cell
            obj = scene.objects[0]
            x, y = measured_centre(
                image, SPEC_COLOURS[obj.colour], SPEC_BACKGROUNDS[scene.background]
            )
            assert spec_phrase(x, y) == spec_phrase(obj.x, obj.y)
    assert len(seen) == 9


def test_captions_follow_the_spec_examples():
    one = Scene("navy", (SceneObject("circle", "red", "large", 0.1, 0.1),))
    assert still_caption(one) == "a large red circle at the top left on a navy background"
    two = Scene(
        "teal",
        (
            SceneObject("square", "blue", "small", 0.9, 0.1),
            SceneObject("circle", "yellow", "large", 0.2, 0.8),
        ),
    )
    assert still_caption(two) == (
        "a small blue square at the top right and a large yellow circle at the bottom left "
        "on a teal background"
    )
    centre = Scene("gray", (SceneObject("triangle", "green", "medium", 0.5, 0.5),))
    assert still_caption(centre) == "a medium green triangle in the center on a gray background"
    for vx, words in ((-0.3, "to the left"), (0.3, "to the right"), (0.05, "in place")):
        clip = Scene("sky", (SceneObject("square", "purple", "small", 0.5, 0.5, vx, 0.0),))
        assert clip_caption(clip) == f"a small purple square bounces {words} on a sky background"


def closed_form(x0, y0, vx, vy, r, t):
    """One wall bounce (right wall) and one floor bounce, written out by hand for this test."""
    t_wall = (1 - r - x0) / vx
    x = x0 + vx * t if t <= t_wall else (1 - r) - vx * (t - t_wall)
    # 0.75 t^2 + vy t + (y0 - (1 - r)) = 0 -> first floor contact
    t_floor = max(np.roots([SPEC_G / 2, vy, y0 - (1 - r)]).real)
    if t <= t_floor:
        return x, y0 + vy * t + SPEC_G / 2 * t * t
    v_up = -SPEC_FLOOR_E * (vy + SPEC_G * t_floor)
    dt = t - t_floor
    return x, (1 - r) + v_up * dt + SPEC_G / 2 * dt * dt


@pytest.mark.parametrize("shape", ["circle", "square", "triangle"])
def test_frames_follow_the_closed_form_arcs(shape):
    x0, y0, vx, vy = 0.8, 0.5, 0.3, -0.5
    obj = SceneObject(shape, "yellow", "small", x0, y0, vx, vy)
    r = SPEC_SIZES["small"]
    frames = 60  # 2.5 s: one wall bounce (~0.43 s) and one floor bounce (~1.16 s), not two
    times = np.arange(frames) / SPEC_FPS
    expected = np.array([closed_form(x0, y0, vx, vy, r, t) for t in times])
    state = simulate(obj, times)
    assert np.abs(state[:, :2] - expected).max() * 256 < 1e-6
    video = render_clip(Scene("navy", (obj,)), 256, frames)
    measured = np.array(
        [measured_centre(f, SPEC_COLOURS["yellow"], SPEC_BACKGROUNDS["navy"]) for f in video]
    )
    assert np.abs(measured - expected).max() * 256 < 0.5


def test_floor_keeps_085_of_vertical_speed_and_walls_keep_horizontal_speed():
    obj = SceneObject("circle", "red", "medium", 0.5, 0.3, 0.45, 0.2)
    r = SPEC_SIZES["medium"]
    t_floor = max(np.roots([SPEC_G / 2, 0.2, 0.3 - (1 - r)]).real)
    t_wall = (1 - r - 0.5) / 0.45
    eps = 1e-7
    before, after = simulate(obj, [t_floor - eps, t_floor + eps])
    assert after[3] / before[3] == pytest.approx(-SPEC_FLOOR_E, rel=1e-5)
    assert before[1] == pytest.approx(1 - r, abs=1e-6)
    before, after = simulate(obj, [t_wall - eps, t_wall + eps])
    assert after[2] == pytest.approx(-before[2], abs=1e-12)
    assert before[0] == pytest.approx(1 - r, abs=1e-6)
    # Over a long run: |vx| never changes, the object stays between the walls and above the floor.
    long = simulate(obj, np.arange(0, 20, 1 / 96))
    assert np.allclose(np.abs(long[:, 2]), 0.45)
    assert long[:, 0].min() >= r - 1e-9 and long[:, 0].max() <= 1 - r + 1e-9
    assert long[:, 1].max() <= 1 - r + 1e-9
    # Each floor bounce leaves with 0.85 of the speed it arrived with, until it comes to rest.
    assert long[-1, 1] == pytest.approx(1 - r) and long[-1, 3] == 0.0


def test_objects_may_leave_through_the_top():
    obj = SceneObject("circle", "red", "small", 0.5, 0.15, 0.0, -1.0)
    y = simulate(obj, np.arange(24) / SPEC_FPS)[:, 1]
    assert y.min() < 0  # no ceiling
    assert y.min() == pytest.approx(0.15 - 1.0 / (2 * SPEC_G), abs=1e-3)


def description_of(scene, kind):
    """The words a scene must parse back to, derived here from the spec's rules."""
    objects = []
    for o in scene.objects:
        if kind == "still":
            phrase = spec_phrase(o.x, o.y)
            position = (
                phrase.removeprefix("at the ").removeprefix("on the ").removeprefix("in the ")
            )
            objects.append(ObjectWords(o.size, o.colour, o.shape, position=position))
        else:
            objects.append(ObjectWords(o.size, o.colour, o.shape, direction=spec_direction(o.vx)))
    return Description(kind, scene.background, tuple(objects))


@settings(max_examples=200, deadline=None)
@given(st.integers(0, 2**32 - 1), st.sampled_from([1, 2]))
def test_every_caption_parses_back_to_its_scene(seed, max_objects):
    rng = np.random.default_rng(seed)
    still = random_still_scene(rng, max_objects=max_objects)
    assert parse_caption(still_caption(still)) == description_of(still, "still")
    clip = random_clip_scene(rng, max_objects=max_objects)
    assert parse_caption(clip_caption(clip)) == description_of(clip, "clip")


words = st.builds(
    ObjectWords,
    size=st.sampled_from(list(SPEC_SIZES)),
    colour=st.sampled_from(list(SPEC_COLOURS)),
    shape=st.sampled_from(["circle", "square", "triangle"]),
)


@settings(max_examples=200, deadline=None)
@given(
    st.sampled_from(["still", "clip"]),
    st.sampled_from(list(SPEC_BACKGROUNDS)),
    st.lists(words, min_size=1, max_size=3),
    st.data(),
)
def test_format_and_parse_are_inverse(kind, background, objects, data):
    field = "position" if kind == "still" else "direction"
    options = world.POSITIONS if kind == "still" else world.DIRECTIONS
    objects = tuple(
        ObjectWords(o.size, o.colour, o.shape, **{field: data.draw(st.sampled_from(options))})
        for o in objects
    )
    description = Description(kind, background, objects)
    text = format_caption(description)
    assert parse_caption(text) == description
    assert parse_caption("  " + text.upper() + ". ") == description


@pytest.mark.slow
@settings(max_examples=300, deadline=None)
@given(st.text())
def test_parser_never_crashes_on_free_text(text):
    result = parse_caption(text)
    assert result is None or isinstance(result, Description)


@pytest.mark.parametrize(
    "text",
    [
        "",
        "a cat sitting on a mat",
        "a large red circle at the top left",  # no background
        "a large red circle at the top left on a plaid background",
        "a huge red circle at the top left on a navy background",
        "a large red circle bounces upward on a navy background",
        "a large red circle at the top left and on a navy background",
        "a large red circle bounces to the left and a small blue square at the top on a sky "
        "background",  # still and clip phrases mixed
    ],
)
def test_text_outside_the_grammar_parses_to_none(text):
    assert parse_caption(text) is None
    assert parse_caption(None) is None


@pytest.mark.parametrize("size, tolerance", [(64, 0.02), (256, 0.005)])
@pytest.mark.parametrize("shape", ["circle", "square", "triangle"])
def test_drawn_area_is_the_true_area(shape, size, tolerance):
    """Anti-aliased coverage adds up to the shape's area (pi r^2, 2 r^2, 3 sqrt(3)/4 r^2)."""
    true_area = {"circle": math.pi, "square": 2.0, "triangle": 3 * math.sqrt(3) / 4}[shape]
    background = np.array([20, 30, 80], dtype=float)  # navy
    colour = np.array([250, 250, 250], dtype=float)  # white
    rng = np.random.default_rng(7)
    for word, radius in (("small", 0.07), ("large", 0.16)):
        errors = []
        for x, y in rng.uniform(0.3, 0.7, size=(12, 2)):
            frame = render_frame("navy", [SceneObject(shape, "white", word, x, y)], None, size)
            alpha = (
                (frame - background) @ (colour - background) / np.sum((colour - background) ** 2)
            )
            errors.append(alpha.sum() / (true_area * (radius * size) ** 2) - 1)
        assert abs(np.mean(errors)) < tolerance, (word, np.mean(errors))
