"""Training-free placement: put a prompt's subject where its position words say.

A diffusion model's layout is largely fixed by its starting noise (the shipped `shapes` model
ignores position words and places objects by the noise alone), and a convolutional U-Net is
close to translation-equivariant: shifting the noise shifts the picture. So a cheap preview from
the panel's own noise shows where the subject lands; the noise is rolled to move it to the cell
the prompt names, and the panel is drawn from the rolled noise. This follows two-stage layout
methods (LLM-grounded Diffusion, Lian et al. 2023: prompt -> layout -> layout-following image),
with the layout read from the prompt's words and imposed through the initial noise.
"""

from __future__ import annotations

import re

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
SUBJECT_CONTRAST = 60.0  # RGB distance (0-255) from the background that counts as subject


def prompt_places(prompt: str) -> list[tuple[float, float]]:
    """Cell centres (x, y) in [0, 1] for every position phrase in the prompt, in order."""
    return [PLACES[m] for m in _PLACE_WORDS.findall(prompt.lower())]


def subject_centre(image: np.ndarray) -> tuple[float, float] | None:
    """Centre (x, y) in [0, 1] of the largest region that stands out from the background (the
    median colour of the border) in an (h, w, 3) uint8 image; None if nothing stands out."""
    border = np.concatenate([image[0], image[-1], image[:, 0], image[:, -1]]).astype(np.float32)
    distance = np.linalg.norm(image.astype(np.float32) - np.median(border, axis=0), axis=-1)
    mask = (distance > SUBJECT_CONTRAST).astype(np.uint8)
    count, _, stats, centroids = cv2.connectedComponentsWithStats(mask, connectivity=8)
    if count < 2:
        return None
    largest = 1 + int(np.argmax(stats[1:, cv2.CC_STAT_AREA]))
    h, w = mask.shape
    x, y = centroids[largest]
    return (x + 0.5) / w, (y + 0.5) / h


def cell_distance(point: tuple[float, float], target: tuple[float, float]) -> float:
    """How far `point` lies outside the 3x3-grid cell centred on `target` (0 inside; both
    (x, y) in [0, 1]), the larger of the two axes' overshoots."""
    return max(max(abs(p - t) - 1 / 6, 0.0) for p, t in zip(point, target, strict=True))


def roll_to(
    noise: torch.Tensor, current: tuple[float, float], target: tuple[float, float]
) -> torch.Tensor:
    """Noise (..., h, w) rolled by whole latent pixels so content at `current` moves to `target`
    (both (x, y) in [0, 1]); the shortest way round, since the roll wraps."""
    h, w = noise.shape[-2:]

    def shift(a: float, b: float, n: int) -> int:
        s = round((b - a) * n) % n
        return s - n if s > n // 2 else s

    return torch.roll(
        noise, (shift(current[1], target[1], h), shift(current[0], target[0], w)), dims=(-2, -1)
    )
