"""Honest vocabulary: words of a prompt, checks against a model's words, the shipped model's
vocabulary.json, training recording the words it saw, export writing them, init_from keeping
them."""

from __future__ import annotations

import json

import pytest
import torch

from keyframe.errors import UserError
from keyframe.init_weights import read_state
from keyframe.module import KeyframeModule
from keyframe.pretrained import SHIPPED_DIR, save_pretrained
from keyframe.vocabulary import (
    VOCABULARY_NAME,
    Vocabulary,
    check_prompt,
    describe,
    load_vocabulary,
    save_vocabulary,
    vocabulary_from,
    words_of,
)
from pipeline.cli import main
from pipeline.phrasings import SUBJECTS, grammar_vocabulary, training_vocabulary
from tests.test_keyframe_module import TINY
from tests.test_train_cli import fit_args

SHAPES = Vocabulary(frozenset("a red circle at the top left on navy background".split()),
                    frozenset({"circle"}))  # fmt: skip


def test_words_of_splits_on_everything_but_letters():
    words = ("a", "big", "red", "disc's", "top", "left", "x")
    assert words_of("A Big-red Disc's, top-left! 2x") == words
    assert words_of("") == ()


def test_checks_name_unknown_words_and_a_missing_subject():
    knight = check_prompt(SHAPES, "a knight walks into a castle")
    assert knight.unknown == ("knight", "walks", "into", "castle") and knight.no_subject
    line = describe(knight, SHAPES, "shapes")
    assert line == (
        "no subject model shapes knows (it draws circle); "
        "unknown words: knight, walks, into, castle"
    )
    mixed = check_prompt(SHAPES, "a red circle near a castle")
    assert mixed.unknown == ("near", "castle") and not mixed.no_subject and mixed.flagged
    clean = check_prompt(SHAPES, "A red circle at the top-left on navy background.")
    assert not clean.flagged and clean.checked
    unchecked = check_prompt(None, "a knight")
    assert not unchecked.flagged and not unchecked.checked
    # Without recorded subjects, only unknown words are flagged.
    words_only = Vocabulary(SHAPES.words)
    assert not check_prompt(words_only, "a castle").no_subject


def test_vocabulary_files_round_trip_and_bad_ones_are_one_line_errors(tmp_path):
    save_vocabulary(tmp_path, SHAPES, "test")
    assert load_vocabulary(tmp_path) == SHAPES
    with pytest.raises(UserError, match="already exists"):
        save_vocabulary(tmp_path, SHAPES)
    assert load_vocabulary(tmp_path / "elsewhere") is None
    (tmp_path / VOCABULARY_NAME).write_text('{"format": "other"}')
    with pytest.raises(UserError, match="not an animatic vocabulary"):
        load_vocabulary(tmp_path)
    (tmp_path / VOCABULARY_NAME).write_text("{")
    with pytest.raises(UserError, match="unreadable vocabulary"):
        load_vocabulary(tmp_path)


def test_the_shipped_model_records_the_caption_grammar_it_trained_on():
    shipped = load_vocabulary(SHIPPED_DIR / "shapes")
    assert shipped == grammar_vocabulary()
    assert shipped.subjects == {"circle", "square", "triangle"}
    assert {"knight", "disc", "upper"}.isdisjoint(shipped.words)
    assert vocabulary_from(["a disc"], SUBJECTS).subjects == {"disc"}
    assert training_vocabulary().words >= shipped.words


@pytest.mark.slow
def test_training_records_its_words_and_export_writes_them(tiny_shapes, tmp_path, one_thread):
    extra = ("--trainer.max_steps", "2", "--trainer.limit_val_batches", "0")
    assert main(fit_args(tiny_shapes, tmp_path, *extra)) == 0
    ckpt = tmp_path / "checkpoints" / "last.ckpt"
    recorded = load_vocabulary(ckpt)
    captions = [c for line in (tiny_shapes / "stills.jsonl").read_text().splitlines()
                for c in json.loads(line)["captions"]]  # fmt: skip
    assert recorded is not None and recorded.words <= vocabulary_from(captions).words
    assert len(recorded.words) > 20  # two steps of 8 images, each drawing one of 7 phrasings

    out = tmp_path / "export"
    assert main(["export", "keyframe", str(ckpt), "--out", str(out)]) == 0
    exported = load_vocabulary(out)
    assert exported.words == recorded.words and exported.subjects == recorded.words & SUBJECTS

    # Resuming keeps the words seen before.
    resumed = KeyframeModule(**TINY)
    resumed.on_load_checkpoint(torch.load(ckpt, weights_only=True))
    assert resumed.vocabulary().words == recorded.words


def test_init_from_an_int8_export_keeps_its_weights_and_words(tmp_path):
    torch.manual_seed(0)
    source = KeyframeModule(**TINY)
    with torch.no_grad():
        for p in source.parameters():
            p.add_(torch.randn(p.shape) * 0.05)
    folder = save_pretrained(source, tmp_path / "int8", int8=True)
    save_vocabulary(folder, SHAPES)
    state = read_state(str(folder))
    assert not any(k.startswith("int8_scale") for k in state)
    assert state["net.conv_in.weight"].is_floating_point()

    module = KeyframeModule(**{**TINY, "init_from": str(folder)})
    module.setup("fit")
    weight, original = module.denoiser.net.conv_in.weight, source.ema_net.conv_in.weight
    assert (weight - original).abs().max() < 0.01 * original.abs().max()  # int8 precision
    assert module.vocabulary() == SHAPES
