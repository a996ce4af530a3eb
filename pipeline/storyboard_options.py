"""The storyboard's run options, checked before any panel is drawn: which panels to re-roll, lock
or unlock, the re-roll seed, shot consistency and its noise share; and its notes (``say``).
"""

from __future__ import annotations

import re
import sys
from collections.abc import Iterable
from dataclasses import dataclass

from tqdm import tqdm

from keyframe.errors import UserError
from pipeline.shotlist import MAX_SEED, ShotList


@dataclass(frozen=True)
class Options:
    """A run's checked options: panel numbers (1-based) and the consistency settings."""

    reroll: set[int]
    lock: set[int]
    unlock: set[int]
    seed: int | None
    consistency: bool
    noise_share: float


def say(verbose: bool, message: str) -> None:
    """A note for the user on stderr (above any progress bar), unless quiet."""
    if verbose:
        tqdm.write(message, file=sys.stderr)


def check_batch_size(batch_size: int) -> None:
    if batch_size < 1:
        raise UserError(f"batch size: expected a whole number >= 1, got {batch_size}")


def parse_panels(text: str | Iterable[int] | None, count: int, option: str) -> set[int]:
    """``"1,3"``, ``"2-4"``, ``"all"`` or numbers -> 1-based panel numbers, checked in range."""
    if text is None:
        return set()
    if isinstance(text, str):
        if text.strip().lower() == "all":
            return set(range(1, count + 1))
        numbers = set()
        for part in text.split(","):
            match = re.fullmatch(r"\s*(\d+)\s*(?:-\s*(\d+)\s*)?", part)
            if match is None:
                raise UserError(
                    f"{option} {text!r}: expected panel numbers like '2', '1,3', '2-4' or 'all'"
                )
            low, high = int(match.group(1)), int(match.group(2) or match.group(1))
            numbers.update(range(low, high + 1))
    else:
        numbers = {int(n) for n in text}
    bad = sorted(n for n in numbers if not 1 <= n <= count)
    if bad:
        raise UserError(
            f"{option} {bad[0]}: no such panel; the shot list has {count} panels (1-{count})"
        )
    return numbers


def check_options(
    shots: ShotList,
    reroll: str | Iterable[int] | None,
    seed: int | None,
    lock: str | Iterable[int] | None,
    unlock: str | Iterable[int] | None,
    consistency: bool | None,
    noise_share: float | None,
) -> Options:
    """The options as panel numbers and settings (None: the shot list's), or a UserError."""
    if consistency is None:
        consistency = shots.consistency
    if noise_share is None:
        noise_share = shots.noise_share if consistency else 0.0
    count = len(shots.panels)
    reroll = parse_panels(reroll, count, "--panel")
    lock, unlock = parse_panels(lock, count, "--lock"), parse_panels(unlock, count, "--unlock")
    if seed is not None:
        if len(reroll) != 1:
            raise UserError("--seed needs exactly one --panel to re-roll")
        if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed <= MAX_SEED:
            raise UserError(f"--seed: expected a whole number from 0 to 2**63 - 1, got {seed!r}")
    if lock & unlock:
        raise UserError(f"panel {min(lock & unlock)} is both locked and unlocked")
    if not isinstance(noise_share, (int, float)) or not 0 <= noise_share <= 1:
        raise UserError(f"--noise-share: expected a number from 0 to 1, got {noise_share!r}")
    if noise_share and not consistency:
        raise UserError("--noise-share needs --consistency")
    return Options(reroll, lock, unlock, seed, consistency, noise_share)
