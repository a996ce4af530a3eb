"""The words a keyframe model was trained on, so a prompt outside them is reported, not ignored.

A model folder may hold `vocabulary.json` next to its weights: the lower-case words of every
caption it trained on (training records them; `animatic export` writes the file) and, optionally,
its subjects (the nouns it can draw, e.g. circle, square, triangle for the shapes models). A
prompt's words outside the vocabulary are named in one line; a prompt with none of the subjects
is an error unless forced. A folder without the file is not checked (and says so).
"""

from __future__ import annotations

import functools
import json
import os
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from keyframe.errors import UserError
from keyframe.files import atomic_write

VOCABULARY_NAME = "vocabulary.json"
FORMAT = "animatic-vocabulary"
VERSION = 1
_WORD = re.compile(r"[^\W\d_]+(?:'[^\W\d_]+)?")  # letters, with an inner apostrophe (knight's)


@functools.lru_cache(maxsize=1 << 16)
def words_of(text: str) -> tuple[str, ...]:
    """The lower-case words of a text, in order: letters only (digits, punctuation and hyphens
    separate words: "top-left" is "top", "left"). Memoised: training sees each caption often."""
    return tuple(_WORD.findall(text.lower()))


@dataclass(frozen=True)
class Vocabulary:
    """Words a model knows; `subjects` (None: not recorded) are the ones it can draw."""

    words: frozenset[str]
    subjects: frozenset[str] | None = None

    def unknown(self, prompt: str) -> list[str]:
        """The prompt's words outside the vocabulary, each once, in prompt order."""
        return list(dict.fromkeys(w for w in words_of(prompt) if w not in self.words))

    def has_subject(self, prompt: str) -> bool:
        """Whether the prompt names a subject the model knows (True when none are recorded)."""
        if self.subjects is None:
            return True
        return any(w in self.subjects for w in words_of(prompt))

    def to_json(self, source: str = "") -> dict:
        record = {"format": FORMAT, "version": VERSION, "words": sorted(self.words)}
        record["subjects"] = None if self.subjects is None else sorted(self.subjects)
        if source:
            record["source"] = source
        return record


def vocabulary_from(texts: Iterable[str], subjects: Iterable[str] | None = None) -> Vocabulary:
    """The vocabulary of some texts (captions); `subjects` are kept where they are among them."""
    words = frozenset(w for text in texts for w in words_of(text))
    known = None if subjects is None else frozenset(subjects) & words
    return Vocabulary(words, known or None)


def save_vocabulary(
    directory: str | os.PathLike, vocabulary: Vocabulary, source: str = "", overwrite=False
) -> Path:
    """Write `directory/vocabulary.json` atomically; refuses to replace one unless `overwrite`."""
    path = Path(directory) / VOCABULARY_NAME
    if path.exists() and not overwrite:
        raise UserError(f"{path}: already exists (pass overwrite=True to replace it)")
    text = json.dumps(vocabulary.to_json(source), indent=1) + "\n"
    atomic_write(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))
    return path


def parse_vocabulary(record: object, where: str) -> Vocabulary:
    """A Vocabulary from its JSON record; a UserError naming `where` if it is not one."""
    ok = isinstance(record, dict) and record.get("format") == FORMAT
    words = record.get("words") if ok else None
    subjects = record.get("subjects") if ok else None
    if not (
        isinstance(words, list)
        and all(isinstance(w, str) for w in words)
        and (subjects is None or isinstance(subjects, list))
    ):
        raise UserError(f"{where}: not an animatic vocabulary (expected format {FORMAT!r})")
    if record.get("version") != VERSION:
        found = record.get("version")
        raise UserError(f"{where}: vocabulary version {found!r}, this animatic reads {VERSION}")
    return Vocabulary(frozenset(words), None if subjects is None else frozenset(map(str, subjects)))


def load_vocabulary(model_path: str | os.PathLike) -> Vocabulary | None:
    """The vocabulary recorded with a model: its folder's vocabulary.json, or a training
    checkpoint's `vocabulary` entry; None when there is none."""
    path = Path(model_path)
    if path.is_dir():
        file = path / VOCABULARY_NAME
        if not file.is_file():
            return None
        try:
            record = json.loads(file.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, ValueError) as err:
            raise UserError(f"{file}: unreadable vocabulary ({err})") from None
        return parse_vocabulary(record, str(file))
    if path.is_file() and path.suffix == ".ckpt":
        from keyframe.files import load_checkpoint

        ckpt = load_checkpoint(path, "KeyframeModule checkpoint")  # one line if refused
        record = ckpt.get("vocabulary") if isinstance(ckpt, dict) else None
        return None if record is None else parse_vocabulary(record, f"{path} (vocabulary)")
    return None


@dataclass(frozen=True)
class PromptCheck:
    """What a vocabulary says about one prompt: its unknown words and whether it names a
    subject the model knows; `checked` is False when the model records no vocabulary."""

    unknown: tuple[str, ...] = ()
    no_subject: bool = False
    checked: bool = False

    @property
    def flagged(self) -> bool:
        return bool(self.unknown) or self.no_subject

    def record(self) -> dict:
        """The check as a manifest/sidecar entry."""
        unknown = list(self.unknown)
        return {"checked": self.checked, "unknown": unknown, "no_subject": self.no_subject}


def check_prompt(vocabulary: Vocabulary | None, prompt: str) -> PromptCheck:
    """Check a prompt against a vocabulary (None: nothing to check against)."""
    if vocabulary is None:
        return PromptCheck()
    unknown = tuple(vocabulary.unknown(prompt))
    return PromptCheck(unknown, not vocabulary.has_subject(prompt), checked=True)


def describe(check: PromptCheck, vocabulary: Vocabulary | None, model: str) -> str:
    """The flags of a prompt in words: no known subject (and which the model draws), then the
    unknown words; "" when nothing is flagged."""
    parts = []
    if check.no_subject:
        known = sorted(vocabulary.subjects) if vocabulary and vocabulary.subjects else []
        drawn = f" (it draws {', '.join(known)})" if known else ""
        parts.append(f"no subject model {model} knows{drawn}")
    if check.unknown:
        parts.append(f"unknown words: {', '.join(check.unknown)}")
    return "; ".join(parts)
