"""Training-free placement: put each subject a prompt places where its position words say.

A diffusion model's layout is largely fixed by its starting noise (the shipped `shapes` model
ignores position words and places objects by the noise alone), and the noise acts locally: an
object grows out of the noise around where it appears, so moving that patch of noise moves the
object (swapping a 5x5 patch of the 16x16 latent noise with the patch at the target put 14 of
18 test subjects in their cell; rolling the whole noise, 12). So the panel's own draw shows
where each subject lands; a subject outside the cell its prompt names gets its patch of noise
swapped with the cell's, an extra copy of a subject gets fresh noise, and the panel is drawn
again. Subjects are told apart by the colour word of their clause ("a blue square at the top
right and a yellow circle at the bottom left"). This follows two-stage layout methods
(LLM-grounded Diffusion, Lian et al. 2023: prompt -> layout -> layout-following image), with
the layout read from the prompt's words and imposed through the initial noise.
"""

from __future__ import annotations

import math
import re
import warnings
from collections.abc import Sequence
from dataclasses import dataclass

import cv2
import numpy as np
import torch

# The nine cells of a 3x3 grid (x, y of the cell centre; y down), as the shapes world names them.
PLACES: dict[str, tuple[float, float]] = {
    "top left": (1 / 6, 1 / 6),
    "top right": (5 / 6, 1 / 6),
    "bottom left": (1 / 6, 5 / 6),
    "bottom right": (5 / 6, 5 / 6),
    "top": (0.5, 1 / 6),
    "bottom": (0.5, 5 / 6),
    "left": (1 / 6, 0.5),
    "right": (5 / 6, 0.5),
    "center": (0.5, 0.5),
    "centre": (0.5, 0.5),
    "middle": (0.5, 0.5),
}
_PLACE_WORDS = re.compile(
    r"\b(" + "|".join(sorted(map(re.escape, PLACES), key=len, reverse=True)) + r")\b"
)
# Basic colour terms (sRGB), to tell a prompt's subjects apart in a drawn image.
COLOUR_WORDS: dict[str, tuple[int, int, int]] = {
    "red": (220, 40, 40),
    "orange": (245, 140, 30),
    "yellow": (240, 210, 40),
    "green": (50, 180, 60),
    "blue": (40, 90, 230),
    "purple": (145, 60, 205),
    "pink": (240, 150, 190),
    "brown": (140, 90, 45),
    "white": (245, 245, 245),
    "black": (15, 15, 15),
    "gray": (128, 128, 128),
    "grey": (128, 128, 128),
    # and common names for shades of them
    "crimson": (220, 20, 60),
    "scarlet": (240, 40, 20),
    "lime": (50, 205, 50),
    "emerald": (80, 200, 120),
    "cobalt": (0, 71, 171),
    "azure": (0, 127, 255),
    "gold": (250, 200, 40),
    "golden": (250, 200, 40),
    "lemon": (250, 235, 80),
    "violet": (140, 60, 220),
    "tangerine": (245, 130, 20),
    "amber": (250, 160, 20),
    "ivory": (250, 250, 240),
    "ebony": (30, 30, 30),
}
_COLOUR_WORDS = re.compile(r"\b(" + "|".join(COLOUR_WORDS) + r")\b")
# Other ways to name places, made into the words above before they are read ("upper-left
# corner" -> "top left corner", "centre left" -> "left", "top middle" -> "top").
_PLACE_SYNONYMS = (
    (re.compile(r"[-_]"), " "),
    (re.compile(r"\bupper\b"), "top"),
    (re.compile(r"\blower\b"), "bottom"),
    (re.compile(r"\b(?:centre|middle|centered|centred)\b"), "center"),
    (re.compile(r"\b(top|bottom) center\b"), r"\1"),
    (re.compile(r"\bcenter (left|right)\b"), r"\1"),
)
# Background phrases ("the backdrop is navy", "background: navy"; "on a dark blue background"):
# their colour words are not a subject's. Up to two words after "is"/":" when the noun starts a
# clause, else up to two words (not place words) before it.
_BACKGROUND = (
    re.compile(
        r"(?:^|(?<=[,.;:]))\s*(?:the\s+)?(?:background|backdrop)\s*(?:is\b|:)(?:\s*\w+){1,2}"
    ),
    re.compile(r"(?:(?!(?:top|bottom|left|right|center)\b)\w+\s+){0,2}\b(?:background|backdrop)\b"),
)
SUBJECT_CONTRAST = 60.0  # RGB distance (0-255) from the background that counts as subject
MIN_REGION = 0.002  # share of the image a region needs to count (8 pixels of 64x64)
EXTRA_SHARE = 0.25  # an unasked region this share of the smallest placed subject is a copy
MISSING_COST = 1.0  # a placed subject not drawn, or an extra copy, costs this (cell distances)
UNMATCHED = 10.0  # matching leaves a subject without a region only when regions run out
COLOUR_WEIGHT = 2.0  # matching: RGB distance (as a share of 255) weighs this much
MAX_SUBJECTS = 9  # one per cell of the grid; later position phrases are not placed


@dataclass(frozen=True)
class Subject:
    """What a prompt places: a cell centre (x, y) in [0, 1] and its clause's colour, if named."""

    place: tuple[float, float]
    colour: tuple[int, int, int] | None = None


@dataclass(frozen=True)
class Region:
    """A region of a drawn image that stands out from the background: centre (x, y) and
    radius (of a disc of its area) as shares of the image side, mean RGB, share of the image."""

    centre: tuple[float, float]
    radius: float
    colour: tuple[float, float, float]
    area: float


@dataclass(frozen=True)
class Fit:
    """Regions matched to a prompt's subjects (None: not drawn), the extra copies, and a score
    (0 when every subject is in its cell and nothing else was drawn)."""

    pairs: tuple[tuple[Subject, Region | None], ...]
    extras: tuple[Region, ...]
    score: float


def prompt_subjects(prompt: str) -> list[Subject]:
    """One Subject per place phrase, in order, with its clause's colour word. A subject is named
    before its place ("a red circle at the top left": the last colour word since the previous
    place) or, when the prompt starts with a place ("top left: a red circle; ..."), after it (the
    first colour word before the next place). Synonyms for places are understood (upper left,
    top-left corner, centre, middle left) and a background's colour words are left out. At most
    MAX_SUBJECTS are placed (with a warning)."""
    text = prompt.lower()
    for pattern, replacement in _PLACE_SYNONYMS:
        text = pattern.sub(replacement, text)
    for pattern in _BACKGROUND:
        text = pattern.sub(" ", text)
    places = list(_PLACE_WORDS.finditer(text))
    if not places:
        return []
    if len(places) > MAX_SUBJECTS:
        warnings.warn(
            f"placement: the prompt has more than {MAX_SUBJECTS} position phrases; "
            f"only the first {MAX_SUBJECTS} are placed",
            stacklevel=2,
        )
        places = places[:MAX_SUBJECTS]
    starts = [m.start() for m in places[1:]] + [len(text)]
    ends = [0] + [m.end() for m in places[:-1]]
    before = [_COLOUR_WORDS.findall(text[a : m.start()]) for a, m in zip(ends, places, strict=True)]
    after = [_COLOUR_WORDS.findall(text[m.end() : b]) for m, b in zip(places, starts, strict=True)]
    place_first = not before[0] and any(after)
    subjects = []
    for match, ahead, behind in zip(places, before, after, strict=True):
        names = behind[:1] if place_first else ahead[-1:]
        colour = COLOUR_WORDS[names[0]] if names else None
        subjects.append(Subject(PLACES[match.group(1)], colour))
    return subjects


def subject_regions(image: np.ndarray) -> list[Region]:
    """Regions of an (h, w, 3) uint8 image that stand out from the background (the median
    colour of its border), largest first; specks under MIN_REGION are left out."""
    border = np.concatenate([image[0], image[-1], image[:, 0], image[:, -1]]).astype(np.float32)
    distance = np.linalg.norm(image.astype(np.float32) - np.median(border, axis=0), axis=-1)
    mask = (distance > SUBJECT_CONTRAST).astype(np.uint8)
    count, labels, stats, centroids = cv2.connectedComponentsWithStats(mask, connectivity=8)
    h, w = mask.shape
    regions = []
    for k in range(1, count):
        pixels = int(stats[k, cv2.CC_STAT_AREA])
        if pixels < MIN_REGION * h * w:
            continue
        x, y = centroids[k]
        colour = image[labels == k].reshape(-1, 3).mean(0)
        regions.append(
            Region(
                ((x + 0.5) / w, (y + 0.5) / h),
                math.sqrt(pixels / math.pi) / max(h, w),
                tuple(float(c) for c in colour),
                pixels / (h * w),
            )
        )
    return sorted(regions, key=lambda r: -r.area)


def cell_distance(point: tuple[float, float], target: tuple[float, float]) -> float:
    """How far `point` lies outside the 3x3-grid cell centred on `target` (0 inside; both
    (x, y) in [0, 1]), the larger of the two axes' overshoots."""
    return max(max(abs(p - t) - 1 / 6, 0.0) for p, t in zip(point, target, strict=True))


def _match_cost(subject: Subject, region: Region, largest: float) -> float:
    """How unlikely `region` is to be `subject`: colour (when the prompt names one) first, then
    distance from its cell, then a little for being smaller than the largest region."""
    cost = cell_distance(region.centre, subject.place) + 0.1 * (1 - region.area / largest)
    if subject.colour is not None:
        cost += COLOUR_WEIGHT * math.dist(region.colour, subject.colour) / 255
    return cost


def fit_subjects(subjects: Sequence[Subject], regions: Sequence[Region]) -> Fit:
    """The cheapest matching of subjects to (the few largest) regions, each region at most
    once; regions left over that are not specks beside the subjects count as extra copies."""
    candidates = list(regions[: len(subjects) + 2])
    largest = max((r.area for r in candidates), default=1.0)
    costs = [[_match_cost(s, r, largest) for r in candidates] for s in subjects]
    best = [None if k is None else candidates[k] for k in _cheapest_matching(costs)]
    pairs = tuple(zip(subjects, best, strict=True))
    matched = [r for _, r in pairs if r is not None]
    smallest = min((r.area for r in matched), default=0.0)
    extras = tuple(
        r for r in regions if all(r is not m for m in matched) and r.area >= EXTRA_SHARE * smallest
    )
    score = sum(
        MISSING_COST if r is None else cell_distance(r.centre, s.place) for s, r in pairs
    ) + MISSING_COST * len(extras)
    return Fit(pairs, extras, score)


def _cheapest_matching(costs: list[list[float]]) -> list[int | None]:
    """For each row (subject), a distinct column (region) or None (cost UNMATCHED), with the
    least total cost: exact, by dynamic programming over the sets of columns used, so its time
    is rows x 2^columns (columns <= MAX_SUBJECTS + 2), not the number of permutations."""
    columns = len(costs[0]) if costs else 0
    # state: columns used -> (total cost, picks with None as `columns`); ties go to the first
    # picks in order, as a search through the permutations in order would find them.
    states: dict[int, tuple[float, tuple[int, ...]]] = {0: (0.0, ())}
    for row in costs:
        nxt: dict[int, tuple[float, tuple[int, ...]]] = {}
        for used, (total, picks) in states.items():
            options = [(k, row[k]) for k in range(columns) if not used >> k & 1]
            for k, cost in [*options, (columns, UNMATCHED)]:
                key = used if k == columns else used | 1 << k
                value = (total + cost, (*picks, k))
                if key not in nxt or value < nxt[key]:
                    nxt[key] = value
        states = nxt
    picks = min(states.values())[1]
    return [None if k == columns else k for k in picks]


def _patch(centre: tuple[float, float], radius: int, h: int, w: int) -> torch.Tensor:
    """Flat indices of the (2 radius + 1)^2 latent pixels around `centre` (x, y) in [0, 1],
    wrapping at the edges as a roll does."""
    cy, cx = min(int(centre[1] * h), h - 1), min(int(centre[0] * w), w - 1)
    offsets = torch.arange(-radius, radius + 1)
    ys, xs = (cy + offsets) % h, (cx + offsets) % w
    return (ys[:, None] * w + xs[None, :]).reshape(-1)


def patch_radius(region: Region, size: int) -> int:
    """Half-width in latent pixels of the noise patch that holds a region (at least 2)."""
    return max(2, math.ceil(region.radius * size))


def move_subjects(
    noise: torch.Tensor, fit: Fit, generator: torch.Generator | None = None
) -> torch.Tensor:
    """Noise (c, h, w) with each misplaced subject's patch swapped with its cell's patch, and
    fresh noise (from `generator`) on each extra copy's patch and on the cell of each subject
    that was not drawn at all."""
    c, h, w = noise.shape
    flat = noise.reshape(c, h * w)  # read from; `out` is written
    out = flat.clone()
    largest = (min(h, w) - 1) // 2  # a wider patch would wrap onto itself

    def radius(region: Region) -> int:
        return min(patch_radius(region, max(h, w)), largest)

    sources, targets = [], []
    for subject, region in fit.pairs:
        if region is None or cell_distance(region.centre, subject.place) == 0:
            continue
        r = radius(region)
        sources.append(_patch(region.centre, r, h, w))
        targets.append(_patch(subject.place, r, h, w))
    for source, target in zip(sources, targets, strict=True):  # all read before any write, so
        out[:, target] = flat[:, source]  # two subjects can trade places
    if sources:  # what the patches covered fills the places they left: a permutation
        left, landed = torch.cat(sources).unique(), torch.cat(targets).unique()
        vacated, covered = left[~torch.isin(left, landed)], landed[~torch.isin(landed, left)]
        k = min(len(vacated), len(covered))
        out[:, vacated[:k]] = flat[:, covered[:k]]
    redraw = [_patch(r.centre, radius(r), h, w) for r in fit.extras]
    redraw += [_patch(s.place, min(2, largest), h, w) for s, r in fit.pairs if r is None]
    for index in redraw:
        fresh = torch.randn((c, len(index)), generator=generator)
        out[:, index] = fresh.to(out)
    return out.reshape(c, h, w)
