"""Motion paths through the keys, and the in-betweens they give by forward splatting.

This is where flow-initialised sampling starts (interpolate.inbetween, init "flow"). Each key's
pixels move along a path through the neighbouring keys, found by `robust_flow`: a parabola through
three keys (constant acceleration, as in QVI, Xu et al. 2019; animation software's curved motion
paths do the same) or a straight line when there are only two keys. Both keys of a gap are pushed
along their paths to the frame and blended by softmax splatting (Niklaus & Liu 2020,
interpolate.splatting): a pixel counts more the more it moves (moving things pass in front of
still ones) and the better its flow lands on its own colour (brightness constancy), so a pixel
whose match failed leaves no ghost. Holes no trusted pixel reaches are inpainted from around them
(Telea 2004, cv2.inpaint): filling them from a backward warp put faint copies of the objects
there (most of the init's ghosting); a frame no pixel reaches at all is the backward-warped blend
(`FlowFrames`). With a learned `MotionPrior` (interpolate.motion) the paths come from it instead
of the parabola, moving the parts that interpolate.shapes_prior finds in the keys.
"""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np
import torch

from interpolate import shapes_prior
from interpolate.flow import FlowFrames, key_span, robust_flow, warp
from interpolate.motion import MotionPrior
from interpolate.splatting import HOLE_RADIUS, landing, splat

MOTION_WEIGHT = 1.0  # splat weight exp(MOTION_WEIGHT * flow length in px): movers in front
MIN_TRUST = 1e-3  # pixels trusted less than this are not splatted at all


def path_coefficients(
    near: np.ndarray, t_near: float, far: np.ndarray, t_far: float
) -> tuple[np.ndarray, np.ndarray]:
    """Velocity v and acceleration a (per pixel) of the path d(t) = v t + a t^2 / 2 that moves
    by `near` after t_near frames and by `far` after t_far frames (t_far may be negative)."""
    det = t_near * t_far * (t_far - t_near) / 2
    v = (near * t_far * t_far - far * t_near * t_near) / (2 * det)
    a = (far * t_near - near * t_far) / det
    return v, a


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
            self._trust[a, b] = landing(self.keys[a], self.keys[b], self.flow(a, b))
        return self._trust[a, b]

    def foreground(self, k: int) -> np.ndarray:
        """How surely (0..1, (h, w)) each pixel of key k is something that moves rather than the
        background, once per key (`shapes_prior.foreground`)."""
        if k not in self._foreground:
            if self._background is None:
                self._background = shapes_prior.key_background(self.keys)
            self._foreground[k] = shapes_prior.foreground(self.keys, k, self._background)
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
                trust = landing(self.keys[k], self.keys[near], moved)
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
        (parts (h, w), positions (n, 4, 2), times (4,), mask (n, 4)); see
        `shapes_prior.prior_inputs`."""
        if (k, near) not in self._prior_inputs:
            self._prior_inputs[k, near] = shapes_prior.prior_inputs(self, k, near)
        return self._prior_inputs[k, near]

    def _part_shift(self, k: int, near: int) -> np.ndarray:
        """Where key k's pixels are at key `near` (h, w, 2) px: parts move by their shift, the
        rest by their flow."""
        parts, pos, _, _ = self.prior_inputs(k, near)
        own, there = (1, 2) if k < near else (2, 1)
        field = self.flow(k, near).astype(np.float64).copy()
        return shapes_prior.paint_parts(parts, pos[:, there] - pos[:, own], field)

    @torch.no_grad()
    def _prior_shift(self, k: int, near: int, frame: int) -> np.ndarray:
        """Where key k's pixels are at `frame` (h, w, 2) px: parts on the prior's paths, the
        rest still."""
        parts, pos, times, mask = self.prior_inputs(k, near)
        shift = np.zeros((*parts.shape, 2))
        if not len(pos):
            return shift
        n = len(pos)
        moved = self.motion(pos, times.expand(n, 4), mask, torch.full((n,), frame / self.fps))
        return shapes_prior.paint_parts(parts, moved - pos[:, 1 if k < near else 2], shift)

    def __call__(self, frame: int) -> np.ndarray:
        """Frame `frame` (h, w, 3) uint8: both keys of its gap splatted along their paths."""
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
