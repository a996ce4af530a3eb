"""Many ways to say one shapes-world still: paraphrases the keyframe model trains and is tested on.

The caption grammar (shared/shapes_world.md, pipeline.shapes) says each scene one way; people say it
in others. `phrase(description, rng, split)` words a still's description afresh: synonyms for sizes,
colours, shapes, backgrounds and places ("a big crimson disc in the upper-left corner, dark blue
backdrop"), articles, word order, sentence and list forms, two-object forms. Every word is one the
canonical grammar has or one of the synonyms below (docs/phrasings.md lists them all).

A *phrasing* is a sentence frame with an object form and a position form. A fixed fifth of the
(frame, object form, position form) triples, and two frames, are held out: `split="train"` never
produces them, `split="heldout"` only them, so the eval (`animatic eval keyframe --phrasing
heldout`) tests sentences no training caption had, made of words every training set has.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from keyframe.vocabulary import Vocabulary, vocabulary_from
from pipeline.shapes import BACKGROUNDS, COLOURS, SHAPES, SIZES, Description, format_caption
from pipeline.shapes.captions import POSITION_PHRASES

SPLITS = ("train", "heldout")
PHRASINGS = ("canonical", *SPLITS)  # what `animatic eval keyframe --phrasing` takes

SIZE_WORDS = {
    "small": ("small", "little", "tiny"),
    "medium": ("medium", "medium-sized", "mid-sized"),
    "large": ("large", "big", "huge"),
}
COLOUR_WORDS = {
    "red": ("red", "crimson", "scarlet"),
    "green": ("green", "lime", "emerald"),
    "blue": ("blue", "cobalt", "azure"),
    "yellow": ("yellow", "golden", "lemon"),
    "purple": ("purple", "violet"),
    "orange": ("orange", "tangerine", "amber"),
    "white": ("white", "ivory", "snow white"),
    "black": ("black", "jet black", "ebony"),
}
SHAPE_WORDS = {
    "circle": ("circle", "disc", "disk"),
    "square": ("square", "box", "block"),
    "triangle": ("triangle", "pyramid"),
}
BACKGROUND_WORDS = {
    "navy": ("navy", "navy blue", "dark blue", "midnight blue"),
    "gray": ("gray", "grey", "mid gray"),
    "beige": ("beige", "sand", "tan", "cream"),
    "teal": ("teal", "dark cyan", "dark turquoise"),
    "maroon": ("maroon", "burgundy", "dark red", "wine"),
    "forest": ("forest", "forest green", "dark green", "pine green"),
    "sky": ("sky", "sky blue", "light blue", "pale blue"),
    "pink": ("pink", "rose", "light pink", "pastel pink"),
}
SUBJECTS = frozenset(w for words in SHAPE_WORDS.values() for w in words)
VERTICAL = {"top": ("top", "upper"), "bottom": ("bottom", "lower")}
CENTRE = ("center", "centre", "middle")
PICTURE = ("picture", "frame", "image")
ARTICLES = ("a", "one", "the", "")
VERBS = ("sits", "rests", "floats", "is")

# Position forms by cell kind, five each (the index is part of a phrasing), and bare forms for
# lists. {V}: top/upper, bottom/lower; {v}: top, bottom; {H}: left, right; {c}: center words.
POSITION_FORMS = {
    "corner": (
        "at the {V} {H}",
        "in the {V} {H}",
        "in the {V}-{H} corner",
        "at the {V} {H} corner",
        "in the {V} {H} of the {pic}",
    ),
    "vertical": (
        "at the {v}",
        "near the {v}",
        "at the {v} {c}",
        "along the {v} edge",
        "in the {V} {c} of the {pic}",
    ),
    "horizontal": (
        "on the {H}",
        "at the {H}",
        "on the {H} side",
        "at the {c} {H}",
        "on the {H} of the {pic}",
    ),
    "centre": (
        "in the {c}",
        "at the {c}",
        "in the very {c}",
        "{centred}",
        "in the {c} of the {pic}",
    ),
}
BARE_POSITIONS = {
    "corner": ("{V} {H}", "{V}-{H}", "{V} {H} corner"),
    "vertical": ("{v}", "{v} {c}", "{V} {c}"),
    "horizontal": ("{H}", "{H} side", "{c} {H}"),
    "centre": ("{c}",),
}
OBJECT_FORMS = (
    "{a} {size} {colour} {shape}",
    "{a} {size}, {colour} {shape}",
    "{a} {size} {shape} in {colour}",
    "{a} {colour} {shape} of {plain_size} size",
    "{a} {shape}, {size} and {colour}",
)
BACKGROUND_FORMS = {
    "prep": (
        "on {a_bg} background",
        "against {a_bg} background",
        "on {a_bg} backdrop",
        "over {a_bg} backdrop",
        "in front of {a_bg} background",
    ),
    "noun": (
        "{bg} background",
        "{a_bg} background",
        "{bg} backdrop",
        "{a_bg} backdrop",
        "plain {bg} background",
    ),
    "sentence": ("the background is {bg}", "{bg} background", "the backdrop is {bg}"),
}


@dataclass(frozen=True)
class Frame:
    """A sentence frame: {O1} {P1} {O2} {P2} objects and places, {Bp}/{Bn}/{Bs} background forms.
    A list frame names attributes bare ({shape1}, {Pb1}, ...); a held-out frame never trains."""

    text: str
    objects: int
    listing: bool = False
    heldout: bool = False


FRAMES = (
    Frame("{O1} {P1} {Bp}", 1),
    Frame("{O1} {P1}, {Bn}", 1),
    Frame("{P1}, {O1} {Bp}", 1),
    Frame("{Bn}: {O1} {P1}", 1),
    Frame("{Bn} with {O1} {P1}", 1),
    Frame("there is {O1} {P1} {Bp}", 1),
    Frame("{O1} {verb} {P1} {Bp}", 1),
    Frame("{O1} {P1}. {Bs}", 1),
    Frame("{shape1}, {colour1}, {size1}, {Pb1}, {bg} background", 1, listing=True),
    Frame(
        "shape: {shape1}, {colour_key}: {colour1}, size: {size1}, position: {Pb1}, "
        "background: {bg}",
        1,
        listing=True,
    ),
    Frame("{P1} there is {O1}, {Bn}", 1, heldout=True),
    Frame("{O1} {P1} and {O2} {P2} {Bp}", 2),
    Frame("{O1} {P1}, {O2} {P2}, {Bn}", 2),
    Frame("{P1}, {O1}; {P2}, {O2}; {Bn}", 2),
    Frame("{O1} {P1} with {O2} {P2} {Bp}", 2),
    Frame("two shapes {Bp}: {O1} {P1} and {O2} {P2}", 2),
    Frame("{Bn} with {O1} {P1} and {O2} {P2}", 2),
    Frame("{O1} {P1}. {O2} {P2}. {Bs}", 2),
    Frame(
        "{shape1}, {colour1}, {size1}, {Pb1}; {shape2}, {colour2}, {size2}, {Pb2}; {bg} background",
        2,
        listing=True,
    ),
    Frame("{Bn}; {O1} {P1}; {O2} {P2}", 2, heldout=True),
)
FORMS = len(OBJECT_FORMS)  # object forms; position forms per cell kind: also five


def is_heldout(frame: int, object_form: int, position_form: int) -> bool:
    """Whether the phrasing (frame index, object form, position form) is kept out of training:
    held-out frames, and one position form in five for each frame and object form."""
    spec = FRAMES[frame]
    if spec.heldout:
        return True
    if spec.listing:
        return False
    return (frame + 2 * object_form + 3 * position_form) % 5 == 4


@functools.cache
def phrasings_of(split: str, objects: int) -> tuple[tuple[int, int, int], ...]:
    """Every (frame, object form, position form) of a split for scenes of `objects` objects
    (list frames have one, with forms 0)."""
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, not {split!r}")
    out = []
    for f, spec in enumerate(FRAMES):
        if spec.objects != objects:
            continue
        forms = [(0, 0)] if spec.listing else [(o, p) for o in range(FORMS) for p in range(FORMS)]
        out += [(f, o, p) for o, p in forms if is_heldout(f, o, p) == (split == "heldout")]
    return tuple(out)


def _pick(rng: np.random.Generator, options: Sequence[str]) -> str:
    return options[int(rng.integers(len(options)))]


def _article(rng: np.random.Generator, following: str) -> str:
    word = _pick(rng, ARTICLES)
    if word == "a" and following[:1] in "aeiou":
        return "an"
    return word


def _cell_kind(position: str) -> tuple[str, str | None, str | None]:
    """(kind, vertical word, horizontal word) of a shapes-world position word."""
    parts = position.split()
    v = next((p for p in parts if p in VERTICAL), None)
    h = next((p for p in parts if p in ("left", "right")), None)
    kind = "corner" if v and h else "vertical" if v else "horizontal" if h else "centre"
    return kind, v, h


def _position(rng: np.random.Generator, position: str, form: int | None) -> str:
    """A position phrase in form `form` (None: a bare one, for lists)."""
    kind, v, h = _cell_kind(position)
    options = BARE_POSITIONS[kind] if form is None else (POSITION_FORMS[kind][form],)
    template = _pick(rng, options)
    return template.format(
        V=_pick(rng, VERTICAL[v]) if v else "",
        v=v or "",
        H=h or "",
        c=_pick(rng, CENTRE),
        pic=_pick(rng, PICTURE),
        centred=_pick(rng, ("centered", "centred")),
    )


def _object(rng: np.random.Generator, obj, form: int) -> str:
    size = _pick(rng, SIZE_WORDS[obj.size])
    plain = _pick(rng, [w for w in SIZE_WORDS[obj.size] if not w.endswith("sized")])
    colour = _pick(rng, COLOUR_WORDS[obj.colour])
    shape = _pick(rng, SHAPE_WORDS[obj.shape])
    text = OBJECT_FORMS[form].format(
        a="{a}", size=size, plain_size=plain, colour=colour, shape=shape
    )
    following = text.split("{a}", 1)[1].strip()
    return text.format(a=_article(rng, following)).strip()


def _slots(rng: np.random.Generator, description: Description, o: int, p: int) -> dict:
    """Every value a frame may ask for, drawn for this description."""
    bg = _pick(rng, BACKGROUND_WORDS[description.background])
    a_bg = f"{'an' if bg[0] in 'aeiou' else 'a'} {bg}"
    slots = {"bg": bg, "verb": _pick(rng, VERBS), "colour_key": _pick(rng, ("colour", "color"))}
    for kind, key in (("prep", "Bp"), ("noun", "Bn"), ("sentence", "Bs")):
        slots[key] = _pick(rng, BACKGROUND_FORMS[kind]).format(bg=bg, a_bg=a_bg)
    for k, obj in enumerate(description.objects, start=1):
        slots[f"O{k}"] = _object(rng, obj, o)
        slots[f"P{k}"] = _position(rng, obj.position, p)
        slots[f"Pb{k}"] = _position(rng, obj.position, None)
        slots[f"shape{k}"] = _pick(rng, SHAPE_WORDS[obj.shape])
        slots[f"colour{k}"] = _pick(rng, COLOUR_WORDS[obj.colour])
        slots[f"size{k}"] = _pick(rng, SIZE_WORDS[obj.size])
    return slots


def render_phrasing(
    description: Description, phrasing: tuple[int, int, int], rng: np.random.Generator
) -> str:
    """The description in one phrasing (frame, object form, position form), words drawn from
    `rng`; sometimes capitalised, sometimes with a full stop."""
    f, o, p = phrasing
    text = FRAMES[f].text.format(**_slots(rng, description, o, p))
    text = " ".join(text.split())
    if rng.random() < 0.25:
        text = text[0].upper() + text[1:]
    if rng.random() < 0.25 and not text.endswith("."):
        text += "."
    return text


def phrase(description: Description, rng: np.random.Generator, split: str = "train") -> str:
    """A still description said in a random phrasing of `split` (a frame drawn first, each
    equally often, then its forms)."""
    _check_still(description)
    choices = phrasings_of(split, len(description.objects))
    frames = sorted({f for f, _, _ in choices})
    frame = frames[int(rng.integers(len(frames)))]
    own = [c for c in choices if c[0] == frame]
    return render_phrasing(description, own[int(rng.integers(len(own)))], rng)


def phrasings(description: Description, rng: np.random.Generator, count: int) -> list[str]:
    """`count` different training phrasings of a still (fewer only if the draws keep repeating)."""
    out: dict[str, None] = {}
    for _ in range(count * 4):
        if len(out) == count:
            break
        out[phrase(description, rng, "train")] = None
    return list(out)


def _check_still(description: Description) -> None:
    if description.kind != "still" or not 1 <= len(description.objects) <= 2:
        raise ValueError("phrasings are for still descriptions of one or two objects")


def _phrase_texts() -> list[str]:
    """Every literal text of the frames, forms and synonyms (their words make the vocabulary)."""
    texts = [f.text for f in FRAMES if not f.heldout]
    texts += OBJECT_FORMS + ARTICLES + VERBS + CENTRE + PICTURE + ("an", "colour color centred")
    for table in (POSITION_FORMS, BARE_POSITIONS, BACKGROUND_FORMS):
        texts += [t for forms in table.values() for t in forms]
    for table in (SIZE_WORDS, COLOUR_WORDS, SHAPE_WORDS, BACKGROUND_WORDS, VERTICAL):
        texts += [w for words in table.values() for w in words]
    texts += ["left right centered"]
    return [t for t in texts if t]


def _placeholder_free(text: str) -> str:
    return re.sub(r"\{[^}]*\}", " ", text)


def training_vocabulary() -> Vocabulary:
    """The words of every training phrasing and of the caption grammar; subjects: shape nouns."""
    texts = [_placeholder_free(t) for t in _phrase_texts()]
    return vocabulary_from([*texts, *grammar_texts()], SUBJECTS)


def grammar_texts() -> list[str]:
    """The words of the still caption grammar (pipeline.shapes.captions), as texts."""
    words = [*SIZES, *COLOURS, *SHAPES, *BACKGROUNDS, *POSITION_PHRASES.values()]
    return [*words, format_caption(Description("still", "navy", ())), "a and"]


def grammar_vocabulary() -> Vocabulary:
    """The words of the canonical still captions (what the shipped model first trained on)."""
    return vocabulary_from(grammar_texts(), SHAPES)
