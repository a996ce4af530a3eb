"""Subject placement by position words: the prompt parser, the subject finder, the noise moves,
and KeyframePipeline's placement loop."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch

from keyframe import layout
from keyframe.errors import UserError
from keyframe.pixels import from_uint8, to_uint8
from keyframe.placement import place_subjects
from pipeline.shapes.world import position_word
from tests.test_keyframe_module import randomised, tiny_module

THIRD = 1 / 6


@pytest.mark.parametrize(
    ("prompt", "places"),
    [
        ("a large red circle at the top left on a navy background", [(THIRD, THIRD)]),
        ("a small yellow square on the left on a teal background", [(THIRD, 0.5)]),
        ("a cat in the Centre", [(0.5, 0.5)]),
        ("at the top, and at the bottom right", [(0.5, THIRD), (5 * THIRD, 5 * THIRD)]),
        ("a leftover rightmost topping", []),  # whole words only
        ("a red circle", []),
    ],
)
def test_prompt_subjects_read_position_phrases_in_order(prompt, places):
    found = [subject.place for subject in layout.prompt_subjects(prompt)]
    assert len(found) == len(places)
    assert all(f == pytest.approx(p) for f, p in zip(found, places, strict=True))


def test_prompt_subjects_take_the_colour_word_of_their_own_clause():
    two = layout.prompt_subjects(
        "a small blue square at the top right and a large yellow circle at the bottom left "
        "on a pink background"
    )
    assert [s.place for s in two] == [layout.PLACES["top right"], layout.PLACES["bottom left"]]
    assert [s.colour for s in two] == [layout.COLOUR_WORDS["blue"], layout.COLOUR_WORDS["yellow"]]
    (plain,) = layout.prompt_subjects("a cat at the top on a red background")
    assert plain.colour is None  # the background's colour comes after the place
    assert layout.prompt_subjects("a red circle on a navy background") == []


@pytest.mark.parametrize(
    "prompt, subjects",
    [
        ("a big crimson disc in the upper-left corner, dark blue backdrop",
         [("top left", "crimson")]),
        ("in the lower right, a tiny lime box against a pink background",
         [("bottom right", "lime")]),
        ("dark red background: a golden pyramid in the top middle of the frame",
         [("top", "golden")]),
        ("shape: circle, color: violet, size: big, position: centre left, background: gray",
         [("left", "violet")]),
        ("at the bottom center, a box, large and green; on the left side, the square, big and "
         "amber; a sky background", [("bottom", "green"), ("left", "amber")]),
        ("the backdrop is pink", []),
    ],
)  # fmt: skip
def test_prompt_subjects_read_paraphrases(prompt, subjects):
    found = layout.prompt_subjects(prompt)
    want = [(layout.PLACES[place], layout.COLOUR_WORDS[colour]) for place, colour in subjects]
    assert [(s.place, s.colour) for s in found] == want


def test_placement_reads_every_phrasing_of_the_eval():
    """Placement finds each subject's cell and colour in canonical, training and held-out
    phrasings of the eval's prompts (the background's colour words left out)."""
    import math

    from pipeline.eval_keyframe import keyframe_prompts
    from pipeline.shapes.world import COLOURS

    def nearest(rgb):
        return min(COLOURS, key=lambda name: math.dist(COLOURS[name], rgb))

    for phrasing in ("canonical", "train", "heldout"):
        for prompt, scene in keyframe_prompts(90, 45, seed=4, phrasing=phrasing):
            found = [(s.place, nearest(s.colour)) for s in layout.prompt_subjects(prompt)]
            cells = [layout.PLACES[position_word(o.x, o.y)] for o in scene.objects]
            colours = [o.colour for o in scene.objects]
            assert found == list(zip(cells, colours, strict=True)), prompt


def _disc(size: int, x: float, y: float, radius: int, colour=(230, 40, 40), image=None):
    if image is None:
        image = np.full((size, size, 3), (20, 30, 80), np.uint8)
    cv2.circle(image, (round(x * size - 0.5), round(y * size - 0.5)), radius, colour, -1)
    return image


def _centre(image: np.ndarray) -> tuple[float, float] | None:
    regions = layout.subject_regions(image)
    return regions[0].centre if regions else None


def test_the_largest_region_off_the_background_comes_first():
    image = _disc(64, 0.7, 0.25, 8)
    assert _centre(image) == pytest.approx((0.7, 0.25), abs=1 / 64)
    both = _disc(64, 0.2, 0.8, 3, (250, 250, 250), image.copy())
    assert _centre(both) == pytest.approx((0.7, 0.25), abs=1 / 64)
    assert _centre(np.full((32, 32, 3), 90, np.uint8)) is None


def test_subject_regions_are_listed_largest_first_with_their_colour_and_size():
    image = _disc(64, 0.25, 0.25, 4, (240, 210, 40))
    image = _disc(64, 0.75, 0.7, 9, (40, 90, 230), image)
    image[60, 60] = (250, 250, 250)  # a speck
    big, small = layout.subject_regions(image)
    assert big.centre == pytest.approx((0.75, 0.7), abs=1 / 64)
    assert small.centre == pytest.approx((0.25, 0.25), abs=1 / 64)
    assert np.allclose(big.colour, (40, 90, 230), atol=3) and big.radius == pytest.approx(
        9 / 64, rel=0.1
    )
    assert small.area < big.area


def _region(x, y, colour, radius=0.1):
    return layout.Region((x, y), radius, colour, np.pi * radius**2)


def test_fit_matches_subjects_by_colour_before_distance_and_scores_misses_and_copies():
    blue, yellow = layout.COLOUR_WORDS["blue"], layout.COLOUR_WORDS["yellow"]
    subjects = [
        layout.Subject((5 * THIRD, THIRD), blue),
        layout.Subject((THIRD, 5 * THIRD), yellow),
    ]
    # the yellow one is drawn near the blue one's cell and vice versa
    swapped = [_region(0.2, 0.8, blue), _region(0.8, 0.2, yellow)]
    fit = layout.fit_subjects(subjects, swapped)
    assert [r.colour for _, r in fit.pairs] == [blue, yellow] and fit.extras == ()
    assert fit.score == pytest.approx(2 * (5 * THIRD - 0.2 - THIRD))  # both a cell and more off
    placed = [_region(0.8, 0.2, blue), _region(0.2, 0.8, yellow)]
    assert layout.fit_subjects(subjects, placed).score == 0
    missing = layout.fit_subjects(subjects, placed[:1])
    assert missing.pairs[1][1] is None and missing.score == layout.MISSING_COST
    copy = layout.fit_subjects(subjects[:1], [*placed[:1], _region(0.5, 0.5, blue)])
    assert len(copy.extras) == 1 and copy.score == layout.MISSING_COST
    speck = layout.fit_subjects(subjects[:1], [*placed[:1], _region(0.5, 0.5, blue, 0.01)])
    assert speck.extras == () and speck.score == 0


def test_move_subjects_swaps_patches_and_redraws_copies():
    noise = torch.randn(4, 16, 16, generator=torch.Generator().manual_seed(0))
    subject = layout.Subject((5 * THIRD, THIRD))
    far = layout.Fit(((subject, _region(2.5 / 16, 13.5 / 16, (0, 0, 0))),), (), 1.0)
    moved = layout.move_subjects(noise, far)
    assert torch.equal(moved[:, 0:5, 11:16], noise[:, 11:16, 0:5])  # source patch on the cell
    assert torch.equal(moved[:, 11:16, 0:5], noise[:, 0:5, 11:16])
    assert torch.equal(moved.flatten().sort().values, noise.flatten().sort().values)
    near = layout.Fit(((subject, _region(0.55, 0.25, (0, 0, 0))),), (), 0.1)
    shifted = layout.move_subjects(noise, near)  # overlapping patches: still a permutation
    assert torch.equal(shifted.flatten().sort().values, noise.flatten().sort().values)
    assert torch.equal(shifted[:, 0:5, 11:16], noise[:, 2:7, 6:11])
    placed = layout.Fit(
        ((subject, _region(0.8, 0.2, (0, 0, 0))),), (_region(0.2, 0.8, (0, 0, 0)),), 1.0
    )
    fresh = layout.move_subjects(noise, placed, torch.Generator().manual_seed(1))
    changed = (fresh != noise).any(0)
    assert changed[10:15, 1:6].all() and changed.sum() == 25
    missing = layout.Fit(((subject, None),), (), layout.MISSING_COST)
    changed = (layout.move_subjects(noise, missing) != noise).any(0)
    assert changed[0:5, 11:16].all() and changed.sum() == 25  # a fresh start in its cell


def test_cell_distance_is_zero_inside_the_cell_and_grows_outside():
    assert layout.cell_distance((0.3, 0.1), (THIRD, THIRD)) == 0.0
    assert layout.cell_distance((0.5, 0.1), (THIRD, THIRD)) == pytest.approx(0.5 - 2 * THIRD)
    assert layout.cell_distance((0.9, 0.9), (THIRD, THIRD)) > layout.cell_distance(
        (0.5, 0.5), (THIRD, THIRD)
    )


def test_placement_loop_moves_a_subject_in_a_pixel_space_model():
    """A "model" whose image is its noise (pixel space): one move must land each subject in its
    cell, prompts without a place keep their draw, and the redraw covers only the moved ones."""
    model = tiny_module()
    noise = torch.full((3, 3, 16, 16), -0.7)
    noise[:, 0, 12:15, 12:15] = 0.9  # a red square in the bottom right of every sample
    prompts = ["a red square at the top left", "a red square", "a red square at the bottom right"]
    calls = []

    def draw(x, index=None):
        calls.append(index)
        return x.clone()

    placed = place_subjects(model.model, draw, noise.clone(), noise.clone(), prompts)
    assert calls == [[0]]  # only the first is outside its cell
    assert torch.equal(placed[1:], noise[1:])
    centre = _centre(to_uint8(placed[:1])[0])
    assert layout.cell_distance(centre, (THIRD, THIRD)) == 0.0


def test_placement_loop_moves_two_subjects_to_their_own_cells():
    """Pixel-space "model" again: a blue and a yellow square, each drawn in the other's cell,
    end up in their own after one swap each."""
    model = tiny_module()
    noise = torch.full((1, 3, 16, 16), -0.7)
    blue, yellow = torch.tensor([-0.7, -0.3, 0.8]), torch.tensor([0.9, 0.7, -0.7])
    noise[0, :, 1:4, 12:15] = yellow[:, None, None]  # yellow at the top right
    noise[0, :, 12:15, 1:4] = blue[:, None, None]  # blue at the bottom left
    prompt = ["a blue square at the top right and a yellow square at the bottom left"]
    placed = place_subjects(
        model.model, lambda x, index=None: x.clone(), noise.clone(), noise.clone(), prompt
    )
    regions = layout.subject_regions(to_uint8(placed)[0])
    fit = layout.fit_subjects(layout.prompt_subjects(prompt[0]), regions)
    assert len(regions) == 2 and fit.score == 0


@pytest.mark.slow
def test_place_changes_nothing_without_position_words_and_refuses_anchors():
    model = randomised(tiny_module(sample_place=True))
    prompts = ["a red circle", "a small green triangle"]
    plain = model.sample(prompts, seed=3, place=False)
    assert torch.equal(model.sample(prompts, seed=3, place=True), plain)
    placed = model.sample(["a red circle at the top left"], seed=3, place=True)
    assert placed.shape == (1, 3, 16, 16) and placed.isfinite().all()
    with pytest.raises(UserError, match="place: cannot be combined with an anchor"):
        model.sample(prompts, seed=3, anchor=0, place=True)


@pytest.mark.slow
def test_sample_place_hyperparameter_is_the_default_unless_anchored():
    model = randomised(tiny_module(sample_place=True))
    prompt = ["a red circle at the bottom right", "a blue square on the left"]
    assert torch.equal(model.sample(prompt, seed=5), model.sample(prompt, seed=5, place=True))
    anchored = model.sample(prompt, seed=5, anchor=0)  # placement off, no error
    assert anchored.shape == (2, 3, 16, 16)


def test_only_a_model_with_the_plug_in_places_and_says_so_otherwise():
    plain = randomised(tiny_module())  # sample_place off: no placement plug-in
    assert plain.pipeline().placement is None
    with pytest.raises(UserError, match="place: this model has no placement plug-in"):
        plain.sample(["a red circle at the top left"], seed=1, steps=1, place=True)
    assert plain.sample(["a red circle"], seed=1, steps=1).shape == (1, 3, 16, 16)
    assert tiny_module(sample_place=True).pipeline().placement is place_subjects


def test_pixels_round_trip_and_clip():
    frames = np.random.default_rng(0).integers(0, 256, (2, 5, 7, 3), dtype=np.uint8)
    images = from_uint8(frames)
    assert images.shape == (2, 3, 5, 7) and images.min() >= -1 and images.max() <= 1
    assert np.array_equal(to_uint8(images), frames)
    assert to_uint8(torch.tensor([-3.0, 3.0]).view(1, 2, 1, 1)).ravel().tolist() == [0, 255]
