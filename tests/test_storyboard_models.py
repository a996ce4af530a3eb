"""Storyboards with models per panel and honest vocabulary: which model drew each panel, prompts
outside a model's words flagged in storyboard.json and on the contact sheet, or refused."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest
import torch

from keyframe.module import KeyframeModule
from keyframe.pretrained import save_pretrained
from keyframe.vocabulary import Vocabulary, save_vocabulary
from pipeline import io
from pipeline.cli import main
from pipeline.sheet import FLAG
from pipeline.shotlist import parse_shotlist
from pipeline.storyboard_manifest import MANIFEST, SHEET

CAPTION = "a large red circle at the top left on a navy background"


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    """A tiny random keyframe model at 16 px that knows a few words (vocabulary.json)."""
    torch.manual_seed(0)
    module = KeyframeModule(
        image_size=16, model_channels=8, channel_mult=[1, 2], num_res_blocks=1,
        attention_levels=[1], num_heads=2, ema_decay=0.0, sample_steps=2, text_width=32,
        text_layers=1, text_heads=2, text_context_length=16, text_vocab_size=512,
    )  # fmt: skip
    folder = save_pretrained(module, tmp_path_factory.mktemp("models") / "tiny", fp16=False)
    words = frozenset("a large red circle at the top left on navy background".split())
    save_vocabulary(folder, Vocabulary(words, frozenset({"circle"})))
    return folder


def shot_list(tmp_path, model, panels: str) -> str:
    text = f"size: 16\nsteps: 1\nmodels: {{keyframe: {model}}}\npanels:\n{panels}"
    path = tmp_path / "shots.yaml"
    path.write_text(text, encoding="utf-8")
    return str(path)


FLAGGED = f"""\
  - prompt: {CAPTION}
    duration: 4
  - prompt: a large red circle near a castle
    duration: 4
  - prompt: a knight walks into a castle
    duration: 4
"""


def test_prompts_outside_the_vocabulary_are_refused_or_flagged(tmp_path, tiny_model, capsys):
    shots = shot_list(tmp_path, tiny_model, FLAGGED)
    board = tmp_path / "board"
    args = ["storyboard", shots, "--out", str(board), "--device", "cpu"]
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert err.splitlines()[-1].startswith(
        f"animatic storyboard: error: {shots}:9: panel 3: prompt: "
    )
    assert "unknown words: knight, walks, into, castle; --force draws it anyway" in err
    assert not board.exists()

    assert main([*args, "--force"]) == 0
    err = capsys.readouterr().err
    assert "panel 2: unknown words: near, castle (flagged on the contact sheet)" in err
    panels = json.loads((board / MANIFEST).read_text())["panels"]
    assert [p["vocabulary"]["unknown"] for p in panels] == [
        [],
        ["near", "castle"],
        ["knight", "walks", "into", "castle"],
    ]
    assert [p["vocabulary"]["no_subject"] for p in panels] == [False, False, True]
    sheet = io.read_image(board / SHEET)
    red = np.all(sheet == FLAG, axis=-1).astype(np.uint8)
    count, labels = cv2.connectedComponents(red)
    assert count - 1 == 2  # a frame around panels 2 and 3, none around panel 1
    h, w = red.shape
    cells = set()
    for k in (1, 2):  # which cell of the 2 x 2 grid each frame is in
        ys, xs = np.nonzero(labels == k)
        cells.add((int(ys.mean() > h / 2), int(xs.mean() > w / 2)))
    assert cells == {(0, 1), (1, 0)}  # panel 2 top right, panel 3 bottom left


@pytest.mark.slow
def test_each_panel_may_have_its_own_model(tmp_path, tiny_model):
    panels = f"""\
  - prompt: {CAPTION}
    duration: 4
  - prompt: a small blue square in the center on a teal background
    models: {{keyframe: oracle}}
    duration: 4
"""
    shots = shot_list(tmp_path, tiny_model, panels)
    board = tmp_path / "board"
    assert main(["storyboard", shots, "--out", str(board), "--quiet", "--device", "cpu"]) == 0
    manifest = json.loads((board / MANIFEST).read_text())
    assert [p["model"] for p in manifest["panels"]] == [str(tiny_model), "oracle"]
    assert manifest["models"]["keyframe"] == str(tiny_model)
    # --keyframe-model draws every panel with one model.
    other = tmp_path / "all-oracle"
    assert (
        main(["storyboard", shots, "--out", str(other), "--quiet", "--keyframe-model", "oracle"])
        == 0
    )
    panels = json.loads((other / MANIFEST).read_text())["panels"]
    assert [p["model"] for p in panels] == ["oracle", "oracle"]


def test_panel_models_in_the_shot_list(tmp_path):
    (tmp_path / "sd").mkdir()
    text = f"""\
panels:
  - prompt: {CAPTION}
    models: {{keyframe: diffusers:sd}}
  - prompt: {CAPTION}
    models: {{keyframe: diffusers:./sd}}
  - prompt: {CAPTION}
"""
    shots = parse_shotlist(text, "s.yaml", base_dir=tmp_path)
    sd = f"diffusers:{(tmp_path / 'sd').resolve()}"
    assert [p.keyframe_model for p in shots.panels] == [sd, sd, None]
    from keyframe.errors import UserError

    with pytest.raises(UserError, match=r"s.yaml:3: panel 1: models: interpolate: unknown key"):
        parse_shotlist(text.replace("{keyframe: diffusers:sd}", "{interpolate: x}"), "s.yaml")
