"""The caption grammar of the shapes world (still and clip captions), and its parser.

`describe_*` turns a scene into words, `format_caption` words into text, `parse_caption` text back
into words; parse_caption(format_caption(d)) == d. Text outside the grammar parses to None.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from .world import (
    BACKGROUNDS,
    COLOURS,
    DIRECTIONS,
    SHAPES,
    SIZES,
    Scene,
    direction_word,
    position_word,
)

# The phrase each position word takes in a still caption.
POSITION_PHRASES: dict[str, str] = {
    "top left": "at the top left",
    "top": "at the top",
    "top right": "at the top right",
    "left": "on the left",
    "center": "in the center",
    "right": "on the right",
    "bottom left": "at the bottom left",
    "bottom": "at the bottom",
    "bottom right": "at the bottom right",
}


@dataclass(frozen=True)
class ObjectWords:
    """One object as a caption names it: a position (stills) or a direction (clips)."""

    size: str
    colour: str
    shape: str
    position: str | None = None
    direction: str | None = None


@dataclass(frozen=True)
class Description:
    """A scene as a caption names it. kind is "still" or "clip"."""

    kind: str
    background: str
    objects: tuple[ObjectWords, ...]


def describe_still(scene: Scene) -> Description:
    """Words for a still: each object's position is the 3x3 cell of its centre."""
    words = tuple(
        ObjectWords(o.size, o.colour, o.shape, position=position_word(o.x, o.y))
        for o in scene.objects
    )
    return Description("still", scene.background, words)


def describe_clip(scene: Scene) -> Description:
    """Words for a clip: each object's direction comes from the sign of its start vx."""
    words = tuple(
        ObjectWords(o.size, o.colour, o.shape, direction=direction_word(o.vx))
        for o in scene.objects
    )
    return Description("clip", scene.background, words)


def format_caption(description: Description) -> str:
    """The caption text for a description (the training and judging grammar)."""
    parts = []
    for o in description.objects:
        head = f"a {o.size} {o.colour} {o.shape}"
        if description.kind == "still":
            parts.append(f"{head} {POSITION_PHRASES[o.position]}")
        else:
            parts.append(f"{head} bounces {o.direction}")
    return f"{' and '.join(parts)} on a {description.background} background"


def still_caption(scene: Scene) -> str:
    return format_caption(describe_still(scene))


def clip_caption(scene: Scene) -> str:
    return format_caption(describe_clip(scene))


def _alternatives(words) -> str:
    # Longest first, so "top left" wins over "top".
    return "|".join(re.escape(w) for w in sorted(words, key=len, reverse=True))


_HEAD = rf"an? ({_alternatives(SIZES)}) ({_alternatives(COLOURS)}) ({_alternatives(SHAPES)})"
_PHRASE_TO_POSITION = {phrase: word for word, phrase in POSITION_PHRASES.items()}
_STILL_OBJECT = re.compile(rf"{_HEAD} ({_alternatives(_PHRASE_TO_POSITION)})")
_CLIP_OBJECT = re.compile(rf"{_HEAD} bounces ({_alternatives(DIRECTIONS)})")
_SCENE = re.compile(rf"(.+) on an? ({_alternatives(BACKGROUNDS)}) background")


def parse_caption(text: str) -> Description | None:
    """Parse a still or clip caption (case, spacing, a final full stop ignored); None otherwise."""
    if not isinstance(text, str):
        return None
    text = " ".join(text.lower().split()).rstrip(".").rstrip()
    scene = _SCENE.fullmatch(text)
    if scene is None:
        return None
    objects_text, background = scene.groups()
    for kind, pattern in (("still", _STILL_OBJECT), ("clip", _CLIP_OBJECT)):
        objects = []
        for part in objects_text.split(" and "):
            match = pattern.fullmatch(part)
            if match is None:
                break
            size, colour, shape, tail = match.groups()
            if kind == "still":
                objects.append(ObjectWords(size, colour, shape, position=_PHRASE_TO_POSITION[tail]))
            else:
                objects.append(ObjectWords(size, colour, shape, direction=tail))
        else:
            return Description(kind, background, tuple(objects))
    return None
