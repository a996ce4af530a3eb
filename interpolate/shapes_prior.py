"""The shapes world's plug-in to motion paths: the moving parts a learned motion prior moves.

With a `MotionPrior` (interpolate.motion) the in-betweens' paths (interpolate.paths) come from the
prior instead of a parabola: each moving part's positions at up to four keys around the gap give
its position at the frame, so an object can follow what the prior's training tracks did between
keys (a bounce, say). The parts rest on the shapes world's look: objects of one flat colour over a
flat background (or the keys' median). Pixels join a part where their flows agree or, where they
are surely foreground, where their colours do; touching objects are split apart, so each keeps its
own path and no copy of one rides along with the other. A large part finds itself at the other
keys by template matching rather than by the flow, which falls apart on large objects that move
far.
"""

from __future__ import annotations

import cv2
import numpy as np
import torch

from interpolate.flow import warp
from interpolate.splatting import COLOUR_WEIGHT

CONTEXT_TRUST = 0.1  # the prior sees a key beside the gap only where a part lands this well
STILL_PX = 0.25  # pixels whose flow across the gap is shorter than this stay put (prior not run)
PART_PX = 1.0  # neighbours whose flows agree to within this many px move as one part on the prior
SAME_COLOUR = 4  # or whose colours agree within this (0..255 per channel) where both are SOLID
MATCH_TIE = 0.5  # template matching: cost (colour^2 per channel) per px away from the flow's guess
MATCH_PIXELS = 8  # parts with at least this many foreground pixels find their shifts by matching
FLAT_SHARE = 0.3  # a colour this common in the keys is a flat background
SOLID = 0.5  # pixels this surely apart from the background (`foreground`)


def rigid_parts(
    flows: np.ndarray,
    moving: np.ndarray,
    step: float = PART_PX,
    colours: np.ndarray | None = None,
    solid: np.ndarray | None = None,
) -> np.ndarray:
    """Label (h, w) of each pixel's part, -1 where not `moving`: moving pixels joined to their
    4-neighbours whose flows (h, w, c) differ by less than `step` px in every component, and
    with `colours` (h, w, 3) to `solid` (h, w) neighbours of the same colour (within SAME_COLOUR
    per channel), so a flat-coloured object whose flows disagree inside still moves as one.
    Labels spread as the smallest pixel index of each part, with pointer jumping, so the cost
    stays a few passes over the image."""
    h, w = moving.shape
    if not moving.any():
        return np.full((h, w), -1, dtype=np.int64)
    still = h * w  # larger than every pixel index
    label = np.where(moving, np.arange(h * w).reshape(h, w), still)
    joins = [  # (this pixel, its neighbour) slices
        ((slice(None), slice(1, None)), (slice(None), slice(None, -1))),
        ((slice(None), slice(None, -1)), (slice(None), slice(1, None))),
        ((slice(1, None), slice(None)), (slice(None, -1), slice(None))),
        ((slice(None, -1), slice(None)), (slice(1, None), slice(None))),
    ]
    same = [np.abs(flows[a] - flows[b]).max(-1) < step for a, b in joins]
    if colours is not None:
        colours = colours.astype(np.int32)
        for i, (a, b) in enumerate(joins):
            alike = np.abs(colours[a] - colours[b]).max(-1) <= SAME_COLOUR
            same[i] |= alike & solid[a] & solid[b]
    same = [joined & moving[a] & moving[b] for joined, (a, b) in zip(same, joins, strict=True)]
    while True:
        new = label.copy()
        for (a, b), joined in zip(joins, same, strict=True):
            new[a] = np.where(joined, np.minimum(new[a], label[b]), new[a])
        flat = new.ravel()
        flat[moving.ravel()] = flat[flat[moving.ravel()]]
        if np.array_equal(new, label):
            break
        label = new
    out = np.full((h, w), -1, dtype=np.int64)
    out[moving] = np.unique(label[moving], return_inverse=True)[1].ravel()
    return out


def split_objects(
    parts: np.ndarray, colours: np.ndarray, solid: np.ndarray, least: int = MATCH_PIXELS
) -> np.ndarray:
    """`parts` (h, w) with every part that holds two or more objects split between them: an
    object is a connected patch of at least `least` `solid` pixels of one colour (within
    SAME_COLOUR), half of them inside it (an anti-aliased straight edge is a line of one colour,
    not an object), and each other pixel of such a part goes with the nearest of its objects. Two
    objects that overlap at a key then move apart, each along its own path."""
    segments = rigid_parts(colours.astype(np.float64), solid & (parts >= 0), SAME_COLOUR + 0.5)
    found = segments >= 0
    if not found.any():
        return parts
    padded = np.pad(segments, 1, constant_values=-1)
    inner = found & (padded[:-2, 1:-1] == segments) & (padded[2:, 1:-1] == segments)
    inner &= (padded[1:-1, :-2] == segments) & (padded[1:-1, 2:] == segments)
    size = np.bincount(segments[found])
    big = (size >= least) & (np.bincount(segments[inner], minlength=len(size)) >= least // 2)
    owner = np.zeros(len(big), np.int64)
    owner[segments[found]] = parts[found]
    objects = np.bincount(owner[big], minlength=parts.max() + 1)
    crowded = objects[np.maximum(parts, 0)] >= 2
    crowded &= parts >= 0
    if not crowded.any():
        return parts
    seeds = crowded & found & big[np.maximum(segments, 0)]
    _, nearest = cv2.distanceTransformWithLabels(
        (~seeds).astype(np.uint8), cv2.DIST_L2, 3, labelType=cv2.DIST_LABEL_PIXEL
    )
    seed_of = np.zeros(nearest.max() + 1, np.int64)
    seed_of[nearest[seeds]] = segments[seeds]
    out = parts.copy()
    out[crowded] = parts.max() + 1 + seed_of[nearest[crowded]]
    moving = out >= 0
    out[moving] = np.unique(out[moving], return_inverse=True)[1].ravel()
    return out


def flat_background(images: np.ndarray, levels: int = 16) -> np.ndarray | None:
    """The colour (3,) of a flat background behind uint8 images, or None: the mean of their most
    common colour bin (`levels` per channel) where that bin holds at least FLAT_SHARE of the
    pixels."""
    pixels = images.reshape(-1, 3)
    bins = (pixels.astype(np.int64) * levels) // 256
    index = (bins[:, 0] * levels + bins[:, 1]) * levels + bins[:, 2]
    counts = np.bincount(index, minlength=levels**3)
    top = int(np.argmax(counts))
    if counts[top] < FLAT_SHARE * len(pixels):
        return None
    return pixels[index == top].astype(np.float32).mean(0)


def key_background(keys: np.ndarray) -> np.ndarray | None:
    """What the keys' objects move over: their flat colour (3,) where they have one
    (`flat_background`), else with more than two keys their per-pixel median (h, w, 3), else
    None (with two keys, each is the other's background: see `foreground`)."""
    background = flat_background(keys)
    if background is None and len(keys) > 2:
        background = np.median(keys.astype(np.float32), axis=0)
    return background


def foreground(keys: np.ndarray, k: int, background: np.ndarray | None) -> np.ndarray:
    """How surely (0..1, (h, w)) each pixel of key k is something that moves rather than the
    background: its colour's distance from `background` (`key_background`; None: the other of
    two keys). A uniform background the flow's smoothing drags along with an object scores 0,
    so parts take their centre and motion from the object, and only foreground pixels join by
    colour and find their shifts by matching (`rigid_parts`, `match_part`)."""
    if background is None:  # two keys and no flat colour: each is the other's
        background = keys[1 - k].astype(np.float32)
    change = np.abs(keys[k].astype(np.float32) - background).sum(-1)
    return 1.0 - np.exp(-COLOUR_WEIGHT * change)


def _vertex(low: float, mid: float, high: float) -> float:
    """Offset (-0.5..0.5) of the lowest point of the parabola through three costs 1 apart."""
    curve = low - 2 * mid + high
    return float(np.clip(0.5 * (low - high) / curve, -0.5, 0.5)) if curve > 0 else 0.0


def match_part(
    image: np.ndarray, other: np.ndarray, mask: np.ndarray, guess: np.ndarray
) -> tuple[np.ndarray, float]:
    """The shift (2,) px that best moves `image`'s pixels under `mask` (h, w) onto `other`, and
    how well it fits (the mean over the mask of exp(-COLOUR_WEIGHT * colour error), as `trust`
    measures a flow): masked template matching over every shift that keeps the mask within an
    image's size of the frame, ties going to the one nearest `guess`, refined to sub-pixel by a
    parabola through the costs. An object's own pixels find where it went even where the flow
    inside it fell apart."""
    h, w = mask.shape
    ys, xs = np.nonzero(mask)
    y0, x0 = ys.min(), xs.min()
    y1, x1 = ys.max() + 1, xs.max() + 1
    template = np.ascontiguousarray(image[y0:y1, x0:x1], dtype=np.float32)
    weights = np.ascontiguousarray(mask[y0:y1, x0:x1], dtype=np.float32)
    pad = max(h, w)
    other = other.astype(np.float32)
    big = cv2.copyMakeBorder(other, pad, pad, pad, pad, cv2.BORDER_REPLICATE)
    cost = cv2.matchTemplate(big, template, cv2.TM_SQDIFF, mask=weights) / (3 * len(ys))
    dy = np.arange(cost.shape[0]) - pad - y0
    dx = np.arange(cost.shape[1]) - pad - x0
    cost = cost + MATCH_TIE * np.hypot(dx[None] - guess[0], dy[:, None] - guess[1])
    r, c = np.unravel_index(np.argmin(cost), cost.shape)
    shift = np.array([dx[c], dy[r]], dtype=np.float64)
    if 0 < c < cost.shape[1] - 1:
        shift[0] += _vertex(cost[r, c - 1], cost[r, c], cost[r, c + 1])
    if 0 < r < cost.shape[0] - 1:
        shift[1] += _vertex(cost[r - 1, c], cost[r, c], cost[r + 1, c])
    moved = warp(other, np.broadcast_to(shift.astype(np.float32), (h, w, 2)))
    error = np.abs(image[mask].astype(np.float32) - moved[mask]).sum(-1)
    fit = float(np.exp(-COLOUR_WEIGHT * error).mean())
    return shift, fit


def prior_inputs(frames, k: int, near: int) -> tuple:
    """The prior's inputs for key k's moving parts in the gap to key `near`, from `frames` (the
    asking interpolate.paths.PathFrames: its keys, positions, fps, flow, trust and foreground):
    (part of each pixel (h, w), -1 for still ones; each part's positions (n, 4, 2) at the keys
    before, at the start, at the end and after the gap in canvas units; times (4,) in seconds;
    mask (n, 4): 1 for the gap's keys, and for a key beside the gap where it exists and the part
    lands there with a mean trust of at least CONTEXT_TRUST).
    A part is a connected patch of moving pixels whose flows agree within PART_PX, or of
    foreground pixels of one colour (`rigid_parts`), with touching objects split apart
    (`split_objects`): it moves as one, so an object keeps its shape where the prior's path
    depends on where the point is (a bounce off the floor). Its centre and flows are means
    weighted by `foreground` (not the background dragged along); a part with MATCH_PIXELS
    foreground pixels or more finds its shifts to the other keys by template matching
    (`match_part`), which holds where the flow falls apart on large, fast motions. Parts that do
    not move between the gap's keys are still."""
    # 1. every pixel's flow to, and trust at, the four keys around the gap
    slots, shifts, trust, times = _slot_flows(frames, k, near)
    h, w = shifts.shape[:2]
    # 2. the parts: moving or solid pixels that move as one, touching objects apart
    key = frames.keys[k]
    weight = frames.foreground(k)
    solid = weight >= SOLID
    moving = (np.linalg.norm(frames.flow(k, near), axis=-1) > STILL_PX) | solid
    parts = rigid_parts(shifts.reshape(h, w, 8), moving, PART_PX, key, solid)
    parts = split_objects(parts, key, solid)
    count = parts.max() + 1
    pos, mask = np.zeros((count, 4, 2)), np.zeros((count, 4))
    if count:
        # 3. positions from the mean flows, 4. refined by matching, 5. still parts dropped
        centre, pos, mask = _flow_positions(parts, weight, shifts, trust)
        _match_positions(frames.keys, k, slots, parts, solid, centre, pos, mask)
        parts, pos, mask = _drop_still(parts, pos, mask, k, near)
    return (
        parts,
        torch.from_numpy(pos).float(),
        torch.from_numpy(times).float(),
        torch.from_numpy(mask).float(),
    )


def _slot_flows(frames, k: int, near: int) -> tuple[list[int], np.ndarray, np.ndarray, np.ndarray]:
    """The keys before, at the start, at the end and after the gap (slots, some maybe outside
    the keys), key k's flows to them (h, w, 4, 2) px, trust (h, w, 4) and their times (4,) in
    seconds; zeros where a slot has no key."""
    h, w = frames.keys[k].shape[:2]
    first = min(k, near)
    slots = [first - 1, first, first + 1, first + 2]
    shifts = np.zeros((h, w, 4, 2))
    trust = np.zeros((h, w, 4))
    times = np.zeros(4)
    for j, other in enumerate(slots):
        if 0 <= other < len(frames.positions):
            times[j] = frames.positions[other] / frames.fps
            trust[..., j] = 1.0 if other == k else frames.trust(k, other)
            if other != k:
                shifts[:, :, j] = frames.flow(k, other)
    return slots, shifts, trust, times


def _part_mean(parts: np.ndarray, values: np.ndarray, weight: np.ndarray) -> np.ndarray:
    """Each part's mean (n,) of `values` (h, w) weighted by `weight` (h, w); a part whose weights
    are all but zero takes the plain mean."""
    count = parts.max() + 1
    inside = parts >= 0
    sizes = np.bincount(parts[inside], minlength=count)
    mass = np.bincount(parts[inside], weight[inside], count)
    weight = np.where((mass > 1e-3 * sizes)[parts], weight, 1.0)
    total = np.bincount(parts[inside], weight[inside], count)
    return np.bincount(parts[inside], (weight * values)[inside], count) / total


def _flow_positions(
    parts: np.ndarray, weight: np.ndarray, shifts: np.ndarray, trust: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Each part's centre (n, 2), its positions (n, 4, 2) at the four slots by its mean flow, in
    canvas units, and the mask (n, 4): the gap's keys, and slots it lands on well enough."""
    h, w = parts.shape
    count = parts.max() + 1
    gy, gx = np.mgrid[0:h, 0:w].astype(np.float64)
    pos, mask = np.zeros((count, 4, 2)), np.zeros((count, 4))
    centre = np.stack(
        [_part_mean(parts, gx + 0.5, weight) / w, _part_mean(parts, gy + 0.5, weight) / h], -1
    )
    for j in range(4):
        trusted = weight * trust[..., j]
        moved = np.stack([_part_mean(parts, shifts[:, :, j, c], trusted) for c in range(2)], -1)
        pos[:, j] = centre + moved / [w, h]
        mask[:, j] = _part_mean(parts, trust[..., j], np.ones((h, w))) >= CONTEXT_TRUST
    mask[:, 1:3] = 1.0  # the gap's own keys: untrusted pixels get no splat weight
    return centre, pos, mask


def _match_positions(
    keys: np.ndarray,
    k: int,
    slots: list[int],
    parts: np.ndarray,
    solid: np.ndarray,
    centre: np.ndarray,
    pos: np.ndarray,
    mask: np.ndarray,
) -> None:
    """Move the positions (and context mask) of each part with MATCH_PIXELS solid pixels or more
    to where template matching finds it at the other keys (`match_part`), in place."""
    h, w = parts.shape
    matched = np.bincount(parts[(parts >= 0) & solid], minlength=len(pos)) >= MATCH_PIXELS
    for part in np.flatnonzero(matched):
        template = (parts == part) & solid
        for j, other in enumerate(slots):
            if other == k or not 0 <= other < len(keys):
                continue
            guess = (pos[part, j] - centre[part]) * [w, h]
            shift, fit = match_part(keys[k], keys[other], template, guess)
            pos[part, j] = centre[part] + shift / [w, h]
            if j in (0, 3):
                mask[part, j] = fit >= CONTEXT_TRUST


def _drop_still(
    parts: np.ndarray, pos: np.ndarray, mask: np.ndarray, k: int, near: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Parts, positions and mask without the parts that move STILL_PX or less across the gap;
    their pixels become still (-1) and the rest are numbered anew."""
    h, w = parts.shape
    own, there = (1, 2) if k < near else (2, 1)
    keep = np.linalg.norm((pos[:, there] - pos[:, own]) * [w, h], axis=-1) > STILL_PX
    index = np.cumsum(keep) - 1
    parts = np.where((parts >= 0) & keep[parts], index[parts], -1)
    return parts, pos[keep], mask[keep]


def paint_parts(parts: np.ndarray, moves: torch.Tensor, field: np.ndarray) -> np.ndarray:
    """`field` (h, w, 2) px with each part's pixels set to its move (n, 2) in canvas units."""
    h, w = parts.shape
    if len(moves):
        inside = parts >= 0
        field[inside] = (moves.double() * torch.tensor([w, h])).numpy()[parts[inside]]
    return field
