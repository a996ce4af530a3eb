"""Motion paths through the keys, and the in-betweens they give by forward splatting.

This is where flow-initialised sampling starts (interpolate.inbetween, init "flow"). Each key's
pixels move along a path through the neighbouring keys, found by `robust_flow`: a parabola through
three keys (constant acceleration, as in QVI, Xu et al. 2019; animation software's curved motion
paths do the same) or a straight line when there are only two keys. Both keys of a gap are pushed
along their paths to the frame and blended by softmax splatting (Niklaus & Liu 2020): a pixel
counts more the more it moves (moving things pass in front of still ones) and the better its
flow lands on its own colour (brightness constancy), so a pixel whose match failed leaves no
ghost. Holes no trusted pixel reaches are inpainted from around them (Telea 2004, cv2.inpaint):
filling them from a backward warp put faint copies of the objects there (most of the init's
ghosting); a frame no pixel reaches at all is the backward-warped blend (`FlowFrames`).
With a learned `MotionPrior` (interpolate.motion) the paths come from it instead of the parabola:
each moving part's positions at up to four keys around the gap give its position at the frame,
so an object can follow what the prior's training tracks did between keys (a bounce, say). Parts
are objects where the keys show them (pixels of one colour apart from a flat background, or from
the keys' median), found at the other keys by template matching rather than by the flow, which
falls apart on large objects that move far; touching objects are split apart, so each keeps its
own path and no copy of one rides along with the other.
"""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np
import torch

from interpolate.flow import FlowFrames, key_span, robust_flow, warp
from interpolate.motion import MotionPrior

MOTION_WEIGHT = 1.0  # splat weight exp(MOTION_WEIGHT * flow length in px): movers in front
COLOUR_WEIGHT = 0.02  # and exp(-COLOUR_WEIGHT * colour error, summed over RGB in 0..255)
MIN_TRUST = 1e-3  # pixels trusted less than this are not splatted at all
HOLE_RADIUS = 3  # px around a hole that cv2.inpaint fills it from
CONTEXT_TRUST = 0.1  # the prior sees a key beside the gap only where a part lands this well
STILL_PX = 0.25  # pixels whose flow across the gap is shorter than this stay put (prior not run)
PART_PX = 1.0  # neighbours whose flows agree to within this many px move as one part on the prior
SAME_COLOUR = 4  # or whose colours agree within this (0..255 per channel) where both are SOLID
MATCH_TIE = 0.5  # template matching: cost (colour^2 per channel) per px away from the flow's guess
MATCH_PIXELS = 8  # parts with at least this many foreground pixels find their shifts by matching
FLAT_SHARE = 0.3  # a colour this common in the keys is a flat background
SOLID = 0.5  # pixels this surely apart from the background (`PathFrames.foreground`)


def path_coefficients(
    near: np.ndarray, t_near: float, far: np.ndarray, t_far: float
) -> tuple[np.ndarray, np.ndarray]:
    """Velocity v and acceleration a (per pixel) of the path d(t) = v t + a t^2 / 2 that moves
    by `near` after t_near frames and by `far` after t_far frames (t_far may be negative)."""
    det = t_near * t_far * (t_far - t_near) / 2
    v = (near * t_far * t_far - far * t_near * t_near) / (2 * det)
    a = (far * t_near - near * t_far) / det
    return v, a


def splat(
    image: np.ndarray, shift: np.ndarray, weight: np.ndarray, acc: np.ndarray, total: np.ndarray
) -> None:
    """Add `image` (h, w, c) moved by `shift` (h, w, 2) px into acc (h, w, c) and total (h, w),
    each pixel spread bilinearly over the four it lands between, scaled by `weight` (h, w)."""
    h, w = shift.shape[:2]
    gy, gx = np.mgrid[0:h, 0:w].astype(np.float64)
    tx, ty = gx + shift[..., 0], gy + shift[..., 1]
    x0, y0 = np.floor(tx).astype(np.int64), np.floor(ty).astype(np.int64)
    fx, fy = tx - x0, ty - y0
    values = image.reshape(h * w, -1)
    for dx, dy, share in (
        (0, 0, (1 - fx) * (1 - fy)),
        (1, 0, fx * (1 - fy)),
        (0, 1, (1 - fx) * fy),
        (1, 1, fx * fy),
    ):
        xs, ys = x0 + dx, y0 + dy
        inside = ((xs >= 0) & (xs < w) & (ys >= 0) & (ys < h)).ravel()
        where = (ys * w + xs).ravel()[inside]
        amount = (share * weight).ravel()[inside]
        total += np.bincount(where, amount, h * w).reshape(h, w)
        for c in range(values.shape[1]):
            acc[..., c] += np.bincount(where, amount * values[inside, c], h * w).reshape(h, w)


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


def _paint_parts(parts: np.ndarray, moves: torch.Tensor, field: np.ndarray) -> np.ndarray:
    """`field` (h, w, 2) px with each part's pixels set to its move (n, 2) in canvas units."""
    h, w = parts.shape
    if len(moves):
        inside = parts >= 0
        field[inside] = (moves.double() * torch.tensor([w, h])).numpy()[parts[inside]]
    return field


class PathFrames:
    """In-betweens of `keys` (k, h, w, 3) uint8 at frame numbers `positions`, one frame on demand:
    frames(f) is frame f (uint8). Flows between neighbouring keys are computed once each; keys
    two apart are linked through the key between them. With `motion`, pixels follow the prior's
    paths; `fps` turns frame numbers into its seconds."""

    def __init__(
        self,
        keys: np.ndarray,
        positions: Sequence[int],
        motion: MotionPrior | None = None,
        fps: float = 24.0,
    ):
        self.keys = keys
        self.positions = [int(p) for p in positions]
        self.motion, self.fps = motion, float(fps)
        self._prior_inputs: dict[tuple[int, int], tuple] = {}
        self._foreground: dict[int, np.ndarray] = {}
        self._background: np.ndarray | None = None
        self.fallback = FlowFrames(keys, positions, flows=self._pair)
        self._flows: dict[tuple[int, int], np.ndarray] = {}
        self._trust: dict[tuple[int, int], np.ndarray] = {}
        self._paths: dict[tuple[int, int], tuple] = {}
        self._pixels = keys.astype(np.float64)

    def _pair(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        return self.flow(i, i + 1), self.flow(i + 1, i)

    def flow(self, a: int, b: int) -> np.ndarray:
        """Flow (h, w, 2) from key a to key b, |a - b| in (1, 2)."""
        if (a, b) not in self._flows:
            if abs(a - b) == 1:
                self._flows[a, b] = robust_flow(self.keys[a], self.keys[b])
            else:
                via = (a + b) // 2
                first = self.flow(a, via)
                self._flows[a, b] = first + warp(self.flow(via, b), first)
        return self._flows[a, b]

    def trust(self, a: int, b: int) -> np.ndarray:
        """exp(-COLOUR_WEIGHT * colour error) of key a's pixels after the flow to key b."""
        if (a, b) not in self._trust:
            self._trust[a, b] = self._landing(a, b, self.flow(a, b))
        return self._trust[a, b]

    def foreground(self, k: int) -> np.ndarray:
        """How surely (0..1, (h, w)) each pixel of key k is something that moves rather than the
        background: its colour's distance from the background, which is the keys' flat colour
        where they have one (`flat_background`), else the per-pixel median of the keys (with
        two keys, the other key). A uniform background the flow's smoothing drags along with an
        object scores 0, so parts take their centre and motion from the object, and only
        foreground pixels join by colour and find their shifts by matching (`rigid_parts`,
        `match_part`)."""
        if k not in self._foreground:
            if self._background is None:
                self._background = flat_background(self.keys)
                if self._background is None and len(self.keys) > 2:
                    self._background = np.median(self.keys.astype(np.float32), axis=0)
            background = self._background
            if background is None:  # two keys and no flat colour: each is the other's
                background = self.keys[1 - k].astype(np.float32)
            change = np.abs(self.keys[k].astype(np.float32) - background).sum(-1)
            self._foreground[k] = 1.0 - np.exp(-COLOUR_WEIGHT * change)
        return self._foreground[k]

    def _far_key(self, k: int, near: int) -> int | None:
        """The third key of k's path: beyond k away from `near`, else beyond `near`."""
        for other in (2 * k - near, 2 * near - k):
            if 0 <= other < len(self.positions):
                return other
        return None

    def path(self, k: int, near: int) -> tuple[np.ndarray, np.ndarray | None, np.ndarray]:
        """Key k's path towards key `near`, once per pair: per-pixel velocity, acceleration (None
        for a straight line: no third key, or a prior that gives the path) and splat weight (the
        motion weight times the trust, 0 below MIN_TRUST: in the flows to `near` and the third
        key, or with a prior, in where each pixel's part lands on key `near`)."""
        if (k, near) not in self._paths:
            p = self.positions
            far = self._far_key(k, near)
            v, a = self.flow(k, near) / (p[near] - p[k]), None
            if self.motion is not None:
                moved = self._part_shift(k, near)
                trust = self._landing(k, near, moved)
            else:
                moved, trust = self.flow(k, near), self.trust(k, near)
                if far is not None:
                    trust = trust * self.trust(k, far)
                    v, a = path_coefficients(
                        self.flow(k, near), p[near] - p[k], self.flow(k, far), p[far] - p[k]
                    )
            trust = np.where(trust < MIN_TRUST, 0.0, trust)
            length = np.linalg.norm(moved, axis=-1)
            weight = np.exp(np.minimum(MOTION_WEIGHT * length, 50.0)) * trust
            self._paths[k, near] = (v, a, weight)
        return self._paths[k, near]

    def shift(self, k: int, near: int, frames: float) -> np.ndarray:
        """Where key k's pixels are `frames` frames later on their path through key `near`
        (and a third key where there is one, or the prior's path)."""
        if self.motion is not None:
            return self._prior_shift(k, near, self.positions[k] + frames)
        v, a, _ = self.path(k, near)
        return v * frames if a is None else v * frames + a * (frames * frames / 2)

    def prior_inputs(self, k: int, near: int) -> tuple:
        """The prior's inputs for key k's moving parts in the gap to key `near`, once per pair:
        (part of each pixel (h, w), -1 for still ones; each part's positions (n, 4, 2) at the
        keys before, at the start, at the end and after the gap in canvas units; times (4,) in
        seconds; mask (n, 4): 1 for the gap's keys, and for a key beside the gap where it exists
        and the part lands there with a mean trust of at least CONTEXT_TRUST).
        A part is a connected patch of moving pixels whose flows agree within PART_PX, or of
        foreground pixels of one colour (`rigid_parts`), with touching objects split apart
        (`split_objects`): it moves as one, so an object keeps its shape where the prior's path
        depends on where the point is (a bounce off the floor). Its centre and flows are means
        weighted by `foreground` (not the background dragged along); a part with MATCH_PIXELS
        foreground pixels or more finds its shifts to the other keys by template matching
        (`match_part`), which holds where the flow falls apart on large, fast motions. Parts
        that do not move between the gap's keys are still."""
        if (k, near) not in self._prior_inputs:
            h, w = self.keys[k].shape[:2]
            first = min(k, near)
            slots = [first - 1, first, first + 1, first + 2]
            gy, gx = np.mgrid[0:h, 0:w].astype(np.float64)
            shifts = np.zeros((h, w, 4, 2))
            trust = np.zeros((h, w, 4))
            times = np.zeros(4)
            for j, other in enumerate(slots):
                if 0 <= other < len(self.positions):
                    times[j] = self.positions[other] / self.fps
                    trust[..., j] = 1.0 if other == k else self.trust(k, other)
                    if other != k:
                        shifts[:, :, j] = self.flow(k, other)
            foreground = self.foreground(k)
            solid = foreground >= SOLID
            moving = (np.linalg.norm(self.flow(k, near), axis=-1) > STILL_PX) | solid
            parts = rigid_parts(shifts.reshape(h, w, 8), moving, PART_PX, self.keys[k], solid)
            parts = split_objects(parts, self.keys[k], solid)
            count = parts.max() + 1
            pos, mask = np.zeros((count, 4, 2)), np.zeros((count, 4))
            if count:
                inside = parts >= 0
                sizes = np.bincount(parts[inside], minlength=count)

                def mean(values: np.ndarray, weight: np.ndarray) -> np.ndarray:
                    mass = np.bincount(parts[inside], weight[inside], count)
                    weight = np.where((mass > 1e-3 * sizes)[parts], weight, 1.0)
                    total = np.bincount(parts[inside], weight[inside], count)
                    return np.bincount(parts[inside], (weight * values)[inside], count) / total

                centre = np.stack(
                    [mean(gx + 0.5, foreground) / w, mean(gy + 0.5, foreground) / h], -1
                )
                for j in range(4):
                    weight = foreground * trust[..., j]
                    moved = np.stack([mean(shifts[:, :, j, c], weight) for c in range(2)], -1)
                    pos[:, j] = centre + moved / [w, h]
                    mask[:, j] = mean(trust[..., j], np.ones((h, w))) >= CONTEXT_TRUST
                mask[:, 1:3] = 1.0  # the gap's own keys: untrusted pixels get no splat weight
                matched = np.bincount(parts[inside & solid], minlength=count) >= MATCH_PIXELS
                for part in np.flatnonzero(matched):
                    template = (parts == part) & solid
                    for j, other in enumerate(slots):
                        if other == k or not 0 <= other < len(self.positions):
                            continue
                        guess = (pos[part, j] - centre[part]) * [w, h]
                        shift, fit = match_part(self.keys[k], self.keys[other], template, guess)
                        pos[part, j] = centre[part] + shift / [w, h]
                        if j in (0, 3):
                            mask[part, j] = fit >= CONTEXT_TRUST
                own, there = (1, 2) if k < near else (2, 1)
                keep = np.linalg.norm((pos[:, there] - pos[:, own]) * [w, h], axis=-1) > STILL_PX
                index = np.cumsum(keep) - 1
                parts = np.where(inside & keep[parts], index[parts], -1)
                pos, mask = pos[keep], mask[keep]
            self._prior_inputs[k, near] = (
                parts,
                torch.from_numpy(pos).float(),
                torch.from_numpy(times).float(),
                torch.from_numpy(mask).float(),
            )
        return self._prior_inputs[k, near]

    def _part_shift(self, k: int, near: int) -> np.ndarray:
        """Where key k's pixels are at key `near` (h, w, 2) px: parts move by their shift, the
        rest by their flow."""
        parts, pos, _, _ = self.prior_inputs(k, near)
        own, there = (1, 2) if k < near else (2, 1)
        field = self.flow(k, near).astype(np.float64).copy()
        return _paint_parts(parts, pos[:, there] - pos[:, own], field)

    def _landing(self, k: int, near: int, shift: np.ndarray) -> np.ndarray:
        """exp(-COLOUR_WEIGHT * colour error) of key k's pixels moved by `shift` onto key near."""
        here = self.keys[k].astype(np.float32)
        there = warp(self.keys[near].astype(np.float32), shift.astype(np.float32))
        return np.exp(-COLOUR_WEIGHT * np.abs(here - there).sum(-1))

    @torch.no_grad()
    def _prior_shift(self, k: int, near: int, frame: int) -> np.ndarray:
        parts, pos, times, mask = self.prior_inputs(k, near)
        shift = np.zeros((*parts.shape, 2))
        if not len(pos):
            return shift
        n = len(pos)
        moved = self.motion(pos, times.expand(n, 4), mask, torch.full((n,), frame / self.fps))
        return _paint_parts(parts, moved - pos[:, 1 if k < near else 2], shift)

    def __call__(self, frame: int) -> np.ndarray:
        i, t = key_span(self.positions, frame)
        if t == 0.0:
            return self.keys[i]
        h, w = self.keys[i].shape[:2]
        acc = np.zeros((h, w, 3))
        total = np.zeros((h, w))
        for k, near, share in ((i, i + 1, 1.0 - t), (i + 1, i, t)):
            shift = self.shift(k, near, frame - self.positions[k])
            splat(self._pixels[k], shift, share * self.path(k, near)[2], acc, total)
        reached = total > 0
        out = acc / np.where(reached, total, 1.0)[..., None]
        if not reached.any():
            return self.fallback(frame)
        out = np.clip(np.round(out), 0, 255).astype(np.uint8)
        if reached.all():
            return out
        return cv2.inpaint(out, (~reached).astype(np.uint8), HOLE_RADIUS, cv2.INPAINT_TELEA)
