"""One default and one check per sampling option (docs/usage.md, "Sampling options"): bad steps,
guidance or sampler get the same one-line message from every entry point, before any model
loads, and an option left out samples with the model's own default (its config)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

import pipeline
from keyframe import diffusers_model, hub, sampling
from keyframe.errors import UserError
from keyframe.module import KeyframeModule
from keyframe.pipeline import KeyframePipeline
from keyframe.pretrained import save_pretrained
from keyframe.sampling_options import SAMPLER_NAMES, check_sampling_options
from pipeline import io
from pipeline.cli import main

BAD = {  # option -> (a bad value as typed, the one message every entry point gives about it)
    "steps": ("0", "steps: expected a whole number from 1 to 1000, got 0"),
    "guidance": ("1e30", "guidance: expected a number from 0 to 100, got 1e+30"),
    "sampler": ("ddim", f"sampler: expected one of {', '.join(SAMPLER_NAMES)}, got 'ddim'"),
}
PANEL = "panels:\n  - prompt: a large red circle at the top left on a navy background\n"


@pytest.fixture
def no_model_loads(monkeypatch):
    """Any model load fails the test: the options must be refused before one."""

    def refuse(*args, **kwargs):
        raise AssertionError("a model loaded before the sampling options were checked")

    monkeypatch.setattr(hub, "from_pretrained", refuse)
    monkeypatch.setattr(diffusers_model, "load_diffusers", refuse)


@pytest.fixture
def keys(tmp_path) -> list[str]:
    paths = [tmp_path / f"key{i}.png" for i in range(2)]
    for i, path in enumerate(paths):
        io.write_png(path, np.full((16, 16, 3), 90 * i, np.uint8))
    return [str(p) for p in paths]


def error_line(capsys, code: int) -> str:
    err = capsys.readouterr().err.strip()
    assert code == 2 and err.count("\n") == 0 and "Traceback" not in err, err
    return err


@pytest.mark.parametrize("option", list(BAD))
def test_every_cli_gives_the_same_message_before_any_model_loads(
    option, tmp_path, keys, capsys, no_model_loads
):
    value, message = BAD[option]
    flag = [f"--{option}", value]
    out = str(tmp_path / "out.png")
    commands = {
        "keyframe": ["keyframe", "a red circle", "--out", out, *flag],
        "keyframe diffusers": ["keyframe", "a red circle", "--out", out, "--model",
                               f"diffusers:{tmp_path}/none", *flag],
        "tween": ["tween", *keys, "--out", str(tmp_path / "t.mp4"), *flag],
        "tween shapes": ["tween", *keys, "--out", str(tmp_path / "t.mp4"), "--model", "shapes",
                         *flag],
    }  # fmt: skip
    if option != "guidance":
        commands["eval keyframe"] = ["eval", "keyframe", "--model", "shapes", *flag]
    if option == "steps":
        commands["eval tween"] = ["eval", "tween", "--model", "shapes", *flag]
    for name, argv in commands.items():
        line = error_line(capsys, main(argv))
        assert line.endswith(f": --{message}"), (name, line)
    assert not list(tmp_path.glob("out*")) and not (tmp_path / "t.mp4").exists()


@pytest.mark.parametrize("option", ["steps", "guidance"])
def test_shot_lists_give_the_same_message_with_their_file_and_line(
    option, tmp_path, capsys, no_model_loads
):
    value, message = BAD[option]
    value = {"1e30": "1.0e+30"}.get(value, value)  # YAML reads a bare 1e30 as text
    shots = tmp_path / "shots.yaml"
    shots.write_text(f"{option}: {value}\n{PANEL}", encoding="utf-8")
    for argv in (["storyboard", str(shots), "--out", str(tmp_path / "board")],
                 ["render", str(shots), "--out", str(tmp_path / "film.mp4")]):  # fmt: skip
        line = error_line(capsys, main(argv))
        assert line.endswith(f": {shots}:1: {message}"), line
    with pytest.raises(UserError) as err:
        pipeline.storyboard(shots, tmp_path / "board")  # the Python API reads it the same way
    assert str(err.value) == f"{shots}:1: {message}"
    assert not (tmp_path / "board").exists()


@pytest.mark.parametrize("option", list(BAD))
def test_the_python_api_and_each_model_give_the_same_message(option, keys, no_model_loads):
    from interpolate.inbetween import interpolate_frames

    value, message = BAD[option]
    value = {"steps": 0, "guidance": 1e30, "sampler": "ddim"}[option]
    with pytest.raises(UserError) as err:
        pipeline.tween(keys, **{option: value})
    assert str(err.value) == f"--{message}"
    calls = {  # checked first: none of them gets as far as touching its (absent) model
        "keyframe": lambda: KeyframePipeline(None)("a red circle", **{option: value}),
        "interpolate": lambda: interpolate_frames(None, torch.zeros(2, 3, 16, 16), [0, 2], 3,
                                                  **{option: value}),
        "diffusers": lambda: diffusers_model.sample_diffusers(
            None, ["a"], [""], [0], **{"steps": None, "guidance": None, option: value},
            size=(64, 64)),
    }  # fmt: skip
    for name, call in calls.items():
        with pytest.raises(UserError) as err:
            call()
        assert str(err.value) == message, name


def test_none_passes_and_the_names_agree_with_the_samplers():
    check_sampling_options(None, None, None)
    check_sampling_options(1000, 0.0, "heun")
    assert tuple(sampling.SAMPLERS) == SAMPLER_NAMES == tuple(diffusers_model.SCHEDULERS)
    for bad in (True, 2.0, 1001, "3"):
        with pytest.raises(UserError, match="steps: expected a whole number"):
            check_sampling_options(steps=bad)
    for bad in (float("nan"), -0.5, True, "5"):
        with pytest.raises(UserError, match="guidance: expected a number"):
            check_sampling_options(guidance=bad)


@pytest.fixture(scope="module")
def odd_model(tmp_path_factory):
    """A tiny keyframe model whose config says 3 steps and guidance 2 (the class default: 30, 5)."""
    torch.manual_seed(0)
    module = KeyframeModule(
        image_size=16, model_channels=8, channel_mult=[1, 2], num_res_blocks=1,
        attention_levels=[1], num_heads=2, text_width=32, text_layers=1, text_heads=2,
        text_context_length=16, text_vocab_size=512, sample_steps=3, sample_guidance=2.0,
        sample_sampler="euler",
    )  # fmt: skip
    return save_pretrained(module, tmp_path_factory.mktemp("odd") / "odd", fp16=False)


@pytest.fixture
def schedules(monkeypatch) -> list[int]:
    """The number of steps of every schedule the sampler runs."""
    seen, karras = [], sampling.karras_sigmas

    def recording(steps, *args, **kwargs):
        seen.append(steps)
        return karras(steps, *args, **kwargs)

    monkeypatch.setattr(sampling, "karras_sigmas", recording)
    return seen


@pytest.mark.slow
def test_left_out_options_sample_with_the_models_own_defaults(
    odd_model, tmp_path, capsys, schedules
):
    out = tmp_path / "k.png"
    argv = ["keyframe", "a large red circle", "--out", str(out), "--model", str(odd_model)]
    assert main([*argv, "--seed", "1", "--force", "--device", "cpu"]) == 0
    record = json.loads(out.with_name("k.png.json").read_text())
    assert (record["steps"], record["guidance"], record["sampler"]) == (3, 2.0, "euler")
    assert schedules == [3]

    # A shot list that sets no steps means the model's default too (not a number of its own).
    shots = tmp_path / "shots.yaml"
    shots.write_text(f"size: 16\nmodels: {{keyframe: {odd_model}}}\n{PANEL}", encoding="utf-8")
    schedules.clear()
    board = tmp_path / "board"
    assert main(["storyboard", str(shots), "--out", str(board), "--force", "--device", "cpu"]) == 0
    assert schedules == [3]
    (panel,) = json.loads((board / "storyboard.json").read_text())["panels"]
    assert (panel["steps"], panel["guidance"]) == (None, None)  # recorded as "the model's"
