"""`animatic keyframe`: images plus sidecars that reproduce them, no silent overwrites, and
one-line errors for bad options and models."""

from __future__ import annotations

import io
import json
import re
import shlex
import shutil

import numpy as np
import pytest
import torch
from tqdm import tqdm

from keyframe.module import KeyframeModule
from keyframe.pretrained import save_pretrained
from pipeline.cli import main
from pipeline.io import read_image
from pipeline.keyframe_cmd import batch_progress

TINY = dict(
    image_size=16, model_channels=16, channel_mult=[1, 2], num_res_blocks=1, attention_levels=[1],
    num_heads=2, text_width=32, text_layers=1, text_heads=2, text_context_length=32,
    text_vocab_size=512, sample_steps=3, sample_guidance=2.0,
)  # fmt: skip


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    """A small random model (every weight non-zero, so images depend on prompt and seed)."""
    torch.manual_seed(0)
    module = KeyframeModule(**TINY)
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in module.parameters():
            p.add_(torch.randn(p.shape, generator=g) * 0.05)
    return save_pretrained(module, tmp_path_factory.mktemp("model") / "tiny", fp16=False)


def draw(model_dir, out, *extra: str) -> int:
    return main(["keyframe", "a red circle", "--out", str(out), "--model", str(model_dir), *extra])


def test_images_and_sidecars_that_reproduce_them(model_dir, tmp_path, capsys):
    assert draw(model_dir, tmp_path / "x.png", "--seed", "5", "--num", "3", "--steps", "2") == 0
    images = [read_image(tmp_path / f"x_{i}.png") for i in range(3)]
    assert all(image.shape == (16, 16, 3) for image in images)
    assert not np.array_equal(images[0], images[1])
    assert "seed 5" in capsys.readouterr().out

    record = json.loads((tmp_path / "x_1.png.json").read_text())
    assert record["prompt"] == "a red circle" and record["seed"] == 6
    assert (record["steps"], record["guidance"], record["sampler"]) == (2, 2.0, "dpmpp_2m")
    assert record["size"] == [16, 16] and len(record["model"]["sha256"]) == 64
    assert record["provenance"]["torch"] == torch.__version__
    assert record["place"] is False and "--no-place" in record["command"]  # the model's default

    argv = shlex.split(record["command"])
    assert argv[:2] == ["animatic", "keyframe"]
    argv[argv.index("--out") + 1] = str(tmp_path / "again.png")
    assert main(argv[1:]) == 0
    assert np.array_equal(read_image(tmp_path / "again.png"), images[1])


def test_place_on_a_model_without_the_plug_in_is_refused(model_dir, tmp_path, capsys):
    assert draw(model_dir, tmp_path / "p.png", "--place", "--seed", "1") == 2
    err = capsys.readouterr().err
    assert "--place: model" in err and "no placement plug-in" in err and len(err.splitlines()) == 1
    assert not (tmp_path / "p.png").exists()


def test_progress_counts_redraws_into_the_total():
    bar = tqdm(total=3 * 2, file=io.StringIO())
    progress = batch_progress(bar, steps=3)
    for images in (2, 1):  # a pass over both images, then one image redrawn
        for step in range(3):
            progress(images, step == 0)
    assert (bar.n, bar.total) == (9, 9) and "placing" in bar.desc


@pytest.fixture(scope="module")
def placing_dir(tmp_path_factory):
    """The tiny model with the placement plug-in (sample_place), as the shapes models have."""
    torch.manual_seed(0)
    module = KeyframeModule(**TINY, sample_place=True)
    return save_pretrained(module, tmp_path_factory.mktemp("placing") / "tiny", fp16=False)


@pytest.mark.slow
def test_place_is_recorded_and_reproduced(placing_dir, tmp_path, capsys):
    out = tmp_path / "placed.png"
    prompt = "a red circle at the top left"
    argv = ["keyframe", prompt, "--out", str(out), "--model", str(placing_dir), "--seed", "2"]
    assert main(argv) == 0  # the plug-in's model places by default
    bar = capsys.readouterr().err.replace("\r", "\n").splitlines()
    done, total = re.findall(r"(\d+)/(\d+) \[", bar[-1])[-1]
    assert "placing" in bar[-1] and int(total) > 8 and done == total  # redraws grow the total
    record = json.loads((tmp_path / "placed.png.json").read_text())
    assert record["place"] is True and "--place" in shlex.split(record["command"])
    plain = ["keyframe", prompt, "--out", str(tmp_path / "plain.png"), "--model", str(placing_dir)]
    assert main([*plain, "--seed", "2", "--no-place"]) == 0
    assert json.loads((tmp_path / "plain.png.json").read_text())["place"] is False
    argv = shlex.split(record["command"])
    argv[argv.index("--out") + 1] = str(tmp_path / "again.png")
    assert main(argv[1:]) == 0
    assert np.array_equal(read_image(tmp_path / "again.png"), read_image(out))


def test_negative_prompt_and_sampler_are_used_and_recorded(model_dir, tmp_path):
    extra = ("--seed", "1", "--sampler", "euler")
    assert draw(model_dir, tmp_path / "plain.png", *extra) == 0
    assert draw(model_dir, tmp_path / "neg.png", *extra, "--negative", "a blue square") == 0
    record = json.loads((tmp_path / "neg.png.json").read_text())
    assert record["negative_prompt"] == "a blue square" and record["sampler"] == "euler"
    assert "--negative 'a blue square'" in record["command"]
    assert not np.array_equal(read_image(tmp_path / "plain.png"), read_image(tmp_path / "neg.png"))


def test_existing_images_are_kept_unless_overwrite(model_dir, tmp_path, capsys):
    out = tmp_path / "x.png"
    assert draw(model_dir, out, "--seed", "1") == 0
    before = out.read_bytes()
    assert draw(model_dir, out, "--seed", "2") == 2
    assert "pass --overwrite" in capsys.readouterr().err
    assert out.read_bytes() == before
    assert draw(model_dir, out, "--seed", "2", "--overwrite") == 0
    assert out.read_bytes() != before


@pytest.mark.parametrize(
    "extra, words",
    [
        (["--steps", "0"], "--steps: expected a whole number from 1 to 1000, got 0"),
        (["--steps", "5000"], "--steps"),
        (["--guidance", "-1"], "--guidance: expected a number from 0 to 100"),
        (["--sampler", "ddim"], "--sampler"),
        (["--num", "0"], "--num"),
        (["--size", "9"], "size: 9x9"),
        (["--seed", "-3"], "--seed"),
    ],
)
def test_bad_options_are_one_line_errors(model_dir, tmp_path, capsys, extra, words):
    assert draw(model_dir, tmp_path / "x.png", *extra) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and words in err, err
    assert not (tmp_path / "x.png").exists()


def test_bad_models_and_outputs_are_one_line_errors(model_dir, tmp_path, capsys):
    broken = tmp_path / "broken.ckpt"
    broken.write_bytes(b"\x00" * 64)
    cases = [
        (tmp_path / "missing", tmp_path / "x.png", "no such file or folder"),
        ("no-such-model", tmp_path / "x.png", "not a shipped model name"),
        (broken, tmp_path / "x.png", "broken.ckpt: not a readable KeyframeModule checkpoint"),
        (model_dir, tmp_path / "x.jpg", "expected a .png file name"),
    ]
    for model, out, words in cases:
        assert main(["keyframe", "a cat", "--out", str(out), "--model", str(model)]) == 2
        err = capsys.readouterr().err.strip()
        assert err.count("\n") == 0 and words in err, err


@pytest.mark.slow
def test_a_prompt_the_shipped_model_was_not_trained_on(tmp_path, capsys):
    out = tmp_path / "k.png"
    assert main(["keyframe", "a knight walks into a castle", "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "unknown words: knight, walks, into, castle" in err, err
    assert "no subject model shapes knows (it draws circle, square, triangle)" in err
    assert "--force" in err and not out.exists()

    argv = ["keyframe", "a knight walks into a castle", "--out", str(out), "--force"]
    assert main([*argv, "--steps", "2", "--no-place", "--seed", "0"]) == 0
    err = capsys.readouterr().err
    assert "warning: prompt 'a knight walks into a castle': no subject" in err
    assert "drawn anyway (--force)" in err and read_image(out).shape == (64, 64, 3)
    record = json.loads((tmp_path / "k.png.json").read_text())["vocabulary"]
    assert record == {"checked": True, "unknown": ["knight", "walks", "into", "castle"],
                      "no_subject": True}  # fmt: skip


def test_unknown_words_beside_a_known_subject_get_one_line(model_dir, tmp_path, capsys):
    from keyframe.vocabulary import Vocabulary, save_vocabulary

    mine = tmp_path / "mine"
    shutil.copytree(model_dir, mine)
    save_vocabulary(mine, Vocabulary(frozenset({"a", "red", "circle"}), frozenset({"circle"})))
    out = tmp_path / "x.png"
    argv = ["keyframe", "a red circle near a castle", "--out", str(out), "--model", str(mine)]
    assert main([*argv, "--negative", "a blur", "--steps", "1"]) == 0
    err = capsys.readouterr().err
    assert "warning: prompt 'a red circle near a castle': unknown words: near, castle" in err
    assert "warning: negative prompt: unknown words: blur" in err
    assert json.loads((tmp_path / "x.png.json").read_text())["vocabulary"]["unknown"] == [
        "near",
        "castle",
    ]
    # A model folder without vocabulary.json is not checked, and says so.
    assert draw(model_dir, tmp_path / "y.png", "--steps", "1") == 0
    assert "records no vocabulary; the prompt is not checked" in capsys.readouterr().err
