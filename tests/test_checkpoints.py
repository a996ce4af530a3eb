"""Checkpoints are never unpickled: a crafted .ckpt whose pickle would run code is refused with
one line by every command and API that reads checkpoints, and its payload never runs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from keyframe.errors import UserError
from keyframe.files import load_checkpoint
from pipeline.cli import main

ROOT = Path(__file__).resolve().parents[1]
TINY = {stage: str(ROOT / "configs" / stage / "tiny.yaml") for stage in ("keyframe", "interpolate")}


class Payload:
    """Unpickling this creates the file `path`: proof that the pickle ran code."""

    def __init__(self, path: Path):
        self.path = str(path)

    def __reduce__(self):
        return (open, (self.path, "w"))


@pytest.fixture
def evil(tmp_path) -> tuple[Path, Path]:
    """A Lightning-shaped checkpoint with a payload in its hyperparameters, and the marker file
    the payload would create."""
    marker = tmp_path / "PAYLOAD-RAN"
    ckpt = tmp_path / "evil.ckpt"
    torch.save(
        {"state_dict": {"w": torch.zeros(2)}, "hyper_parameters": {"x": Payload(marker)},
         "global_step": 0, "epoch": 0},
        ckpt,
    )  # fmt: skip
    return ckpt, marker


def refused(capsys, code: int, training: bool = False) -> str:
    err = capsys.readouterr().err.strip()
    assert code == 2, err
    if training:  # Lightning logs its set-up (seed, devices) first; the error is the last line
        err = err.splitlines()[-1]
    assert err.count("\n") == 0 and "Traceback" not in err, err
    assert "refused" in err and "evil.ckpt" in err, err
    return err


def test_load_checkpoint_refuses_the_payload(evil):
    ckpt, marker = evil
    with pytest.raises(UserError, match="refused: the checkpoint holds pickled Python objects"):
        load_checkpoint(ckpt)
    assert not marker.exists()


def test_truncated_and_junk_checkpoints_are_one_line_errors(evil, tmp_path):
    ckpt, _ = evil
    cut = tmp_path / "cut.ckpt"
    cut.write_bytes(ckpt.read_bytes()[:200])
    junk = tmp_path / "junk.ckpt"
    junk.write_bytes(b"not a checkpoint at all")
    for path in (cut, junk):
        with pytest.raises(UserError, match="not a readable checkpoint") as error:
            load_checkpoint(path)
        assert "\n" not in str(error.value)


def _keys(tmp_path: Path) -> list[str]:
    from pipeline import io

    paths = []
    for i in range(2):
        path = tmp_path / f"key{i}.png"
        io.write_png(path, np.full((16, 16, 3), 60 * i, np.uint8))
        paths.append(str(path))
    return paths


SHOTS = """\
size: 32
panels:
  - prompt: a large red circle at the top left on a navy background
    duration: 4
  - prompt: a small blue square at the bottom on a teal background
    duration: 4
"""


@pytest.mark.parametrize(
    "command",
    [
        ["keyframe", "a red circle", "--out", "{tmp}/k.png", "--model", "{ckpt}"],
        ["tween", "{key0}", "{key1}", "--out", "{tmp}/t.mp4", "--model", "{ckpt}"],
        ["storyboard", "{shots}", "--out", "{tmp}/board", "--keyframe-model", "{ckpt}"],
        ["render", "{shots}", "--out", "{tmp}/f.gif", "--keyframe-model", "oracle",
         "--tween-model", "{ckpt}"],
        ["export", "keyframe", "{ckpt}", "--out", "{tmp}/e"],
        ["export", "interpolate", "{ckpt}", "--out", "{tmp}/e"],
        ["export", "autoencoder", "{ckpt}", "--out", "{tmp}/e"],
        ["export", "motion", "{ckpt}", "--out", "{tmp}/e"],
        ["export", "keyframe", "shapes", "--out", "{tmp}/e", "--autoencoder", "{ckpt}"],
        ["eval", "keyframe", "--model", "{ckpt}", "--out", "{tmp}/r.json"],
    ],
    ids=lambda c: " ".join(c[:2]) + (" --autoencoder" if "--autoencoder" in c else ""),
)  # fmt: skip
@pytest.mark.slow
def test_every_command_refuses_the_payload(evil, tmp_path, capsys, command):
    ckpt, marker = evil
    shots = tmp_path / "shots.yaml"
    shots.write_text(SHOTS)
    key0, key1 = _keys(tmp_path)
    fill = {"tmp": tmp_path, "ckpt": ckpt, "shots": shots, "key0": key0, "key1": key1}
    code = main([part.format(**fill) for part in command])
    refused(capsys, code)
    assert not marker.exists()


@pytest.mark.parametrize(
    ("stage", "option"),
    [
        ("keyframe", "--ckpt_path"),
        ("keyframe", "--model.init_from"),
        ("interpolate", "--model.init_from"),
        ("keyframe", "--model.autoencoder"),
    ],
)
@pytest.mark.slow
def test_training_refuses_the_payload(evil, tiny_shapes, tmp_path, capsys, stage, option):
    ckpt, marker = evil
    argv = [
        "train", stage, "fit", "--config", TINY[stage], "--data.data", str(tiny_shapes),
        "--trainer.default_root_dir", str(tmp_path / "run"), "--trainer.max_steps", "1",
        "--trainer.enable_progress_bar", "false", option, str(ckpt),
    ]  # fmt: skip
    refused(capsys, main(argv), training=True)
    assert not marker.exists()


def test_text_encoder_weights_refuse_the_payload(evil, tmp_path):
    from keyframe.text import _load_text_weights

    ckpt, marker = evil
    with pytest.raises(UserError, match="refused"):
        _load_text_weights(torch.nn.Linear(1, 1), str(ckpt))
    assert not marker.exists()
