"""What the `animatic eval` stages share: checks of the arguments and of what a model returns,
and the number format of the printed scores.
"""

from __future__ import annotations

import argparse

import numpy as np

from keyframe.errors import UserError


def check_at_least(args: argparse.Namespace, *names: str, least: int = 1) -> None:
    """A user error for the first option in `names` set below `least` (None: not set)."""
    for name in names:
        value = getattr(args, name.replace("-", "_"))
        if value is not None and value < least:
            raise UserError(f"--{name} {value}: expected at least {least}")


def check_images(images: np.ndarray, n: int, what: str) -> None:
    """`what` (a model) returned n frames of uint8 (n, h, w, 3), or a ValueError says how not."""
    if not (isinstance(images, np.ndarray) and images.dtype == np.uint8 and images.ndim == 4):
        raise ValueError(
            f"{what} must return uint8 (n, h, w, 3), got {getattr(images, 'shape', images)}"
        )
    if images.shape[0] != n or images.shape[-1] != 3:
        raise ValueError(f"{what} returned {images.shape} for {n} frames; expected ({n}, h, w, 3)")


def fmt(value, spec: str) -> str:
    """`value` formatted by `spec`, or "-" for a score that could not be measured (None)."""
    return "-" if value is None else format(value, spec)
