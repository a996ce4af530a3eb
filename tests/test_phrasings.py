"""Paraphrases of shapes-world stills: held-out phrasings never train, every word of both splits
is a training word, the dataset writes several phrasings per still and training draws them."""

from __future__ import annotations

import json

import numpy as np
import pytest

from keyframe.datasets import ImageCaptionDataset
from keyframe.records import load_records
from keyframe.vocabulary import words_of
from pipeline import phrasings as ph
from pipeline.shapes import Description, ObjectWords, describe_still, random_still_scene


def scenes(count: int, seed: int = 0) -> list[Description]:
    rng = np.random.default_rng(seed)
    return [
        describe_still(random_still_scene(rng, cell=i % 9, max_objects=1 + i % 2))
        for i in range(count)
    ]


def test_heldout_phrasings_never_come_out_of_training():
    rng = np.random.default_rng(1)
    train, heldout = set(), set()
    for description in scenes(1500):
        train.update(ph.phrase(description, rng, "train") for _ in range(3))
        heldout.add(ph.phrase(description, rng, "heldout"))
    assert len(heldout) > 1400 and not train & heldout
    for objects in (1, 2):
        train_set = set(ph.phrasings_of("train", objects))
        held = set(ph.phrasings_of("heldout", objects))
        assert held and train_set and not train_set & held
        # Every frame but the held-out ones trains; every object and position form trains.
        frames = {f for f, _, _ in train_set}
        assert frames | {f for f, _, _ in held} == {
            i for i, f in enumerate(ph.FRAMES) if f.objects == objects
        }
        assert {o for _, o, _ in train_set} == {p for _, _, p in train_set} == set(range(5))


def test_every_word_of_both_splits_is_a_training_word():
    vocabulary = ph.training_vocabulary()
    rng = np.random.default_rng(2)
    seen = set()
    for description in scenes(800, seed=3):
        for split in ph.SPLITS:
            text = ph.phrase(description, rng, split)
            assert set(words_of(text)) <= vocabulary.words, text
            seen.update(words_of(text))
    # The synonyms do show up (not just the canonical words).
    assert {"disc", "upper", "backdrop", "crimson", "burgundy", "tiny"} <= seen
    assert vocabulary.subjects == ph.SUBJECTS
    assert ph.grammar_vocabulary().words < vocabulary.words


def test_a_phrasing_says_every_attribute():
    description = Description(
        "still",
        "navy",
        (
            ObjectWords("large", "red", "circle", position="top left"),
            ObjectWords("small", "blue", "square", position="bottom"),
        ),
    )
    rng = np.random.default_rng(0)
    for split in ph.SPLITS:
        for _ in range(50):
            words = set(words_of(ph.phrase(description, rng, split)))
            for synonyms in (
                ph.COLOUR_WORDS["red"],
                ph.COLOUR_WORDS["blue"],
                ph.SHAPE_WORDS["circle"],
                ph.SHAPE_WORDS["square"],
                ph.BACKGROUND_WORDS["navy"],
            ):
                assert any(set(words_of(s)) <= words for s in synonyms)
            assert "left" in words and words & {"top", "upper"} and words & {"bottom", "lower"}


def test_canonical_captions_are_a_training_phrasing():
    description = scenes(1)[0]
    assert ph.is_heldout(0, 0, 0) is False
    assert ph.phrasings(description, np.random.default_rng(0), 6)
    with pytest.raises(ValueError):
        ph.phrase(Description("clip", "navy", ()), np.random.default_rng(0))


def test_dataset_writes_phrasings_and_training_draws_them(tiny_shapes):
    lines = (tiny_shapes / "stills.jsonl").read_text().splitlines()
    record = json.loads(lines[0])
    assert record["captions"][0] == record["caption"] and len(record["captions"]) >= 5
    assert len(set(record["captions"])) == len(record["captions"])
    records = load_records(tiny_shapes, "image")
    data = ImageCaptionDataset(records[:1], 32)
    drawn = {data[0]["caption"] for _ in range(60)}
    assert drawn == set(records[0]["captions"])  # each phrasing is drawn, nothing else


def test_a_bad_captions_field_is_a_one_line_error(tmp_path):
    from keyframe.errors import UserError

    (tmp_path / "a.png").write_bytes(b"")
    manifest = tmp_path / "m.jsonl"
    manifest.write_text(json.dumps({"path": "a.png", "caption": "x", "captions": "x"}) + "\n")
    with pytest.raises(UserError, match="'captions' must be a non-empty list of strings"):
        load_records(manifest)


def test_the_spec_names_every_word():
    from pathlib import Path

    doc = Path(__file__).resolve().parents[1] / "docs" / "phrasings.md"
    text = " ".join(doc.read_text(encoding="utf-8").split())
    assert ph.training_vocabulary().words <= set(words_of(text))
    counts = [len(ph.phrasings_of(split, n)) for n in (1, 2) for split in ph.SPLITS]
    assert "{} training and {} held-out phrasings; for two: {} and {}".format(*counts) in text
