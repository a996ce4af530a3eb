"""`animatic train`: configs build, overrides reach interpolations, a keyframe fit runs (also as
two DDP processes), and bad configs or data are one-line errors."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
import yaml

from keyframe.module import KeyframeModule
from pipeline.cli import main
from pipeline.train import STAGES, build_cli, config_base

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = sorted((ROOT / "configs").glob("*/*.yaml"))
TINY = str(ROOT / "configs" / "keyframe" / "tiny.yaml")


def config_args(path: Path) -> list[str]:
    """`--config` arguments of a config: an override (its header says "An override of
    BASE.yaml") is given after its base, as its header's command does."""
    base = config_base(path)
    paths = ([base] if base else []) + [path]
    return [arg for p in paths for arg in ("--config", str(p))]


def fit_args(data: Path, root: Path, *extra: str) -> list[str]:
    return [
        "train", "keyframe", "fit", "--config", TINY, "--data.data", str(data),
        "--trainer.default_root_dir", str(root), "--trainer.enable_progress_bar", "false",
        *extra,
    ]  # fmt: skip


def one_line_error(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0, err
    return err


@pytest.mark.slow
def test_fast_dev_run_of_the_tiny_config(tiny_shapes, tmp_path, one_thread):
    assert main(fit_args(tiny_shapes, tmp_path, "--trainer.fast_dev_run", "true")) == 0


def test_print_config_resolves_interpolations_after_overrides(tmp_path, capsys):
    argv = [
        "train", "keyframe", "fit", "--config", TINY, "--print_config",
        "--trainer.val_check_interval", "7", "--trainer.default_root_dir", str(tmp_path / "run"),
    ]  # fmt: skip
    with pytest.raises(SystemExit) as exit_:
        main(argv)
    assert exit_.value.code in (0, None)
    config = yaml.safe_load(capsys.readouterr().out)
    checkpoint = config["trainer"]["callbacks"][0]["init_args"]
    assert checkpoint["every_n_train_steps"] == 7
    assert checkpoint["dirpath"] == f"{tmp_path}/run/checkpoints"
    assert config["data"]["size"] == 32 and config["model"]["text_vocab_size"] == 4096


@pytest.mark.slow
@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_every_config_parses(path, capsys):
    assert path.parent.name in STAGES
    with pytest.raises(SystemExit) as exit_:
        main(["train", path.parent.name, "fit", *config_args(path), "--print_config"])
    assert exit_.value.code in (0, None), capsys.readouterr().err
    assert yaml.safe_load(capsys.readouterr().out)["model"]


@pytest.mark.slow
@pytest.mark.parametrize("name", ["tiny", "shapes"])
def test_keyframe_configs_instantiate(name, tiny_shapes, tmp_path):
    args = ["--config", str(ROOT / "configs" / "keyframe" / f"{name}.yaml")]
    args += ["--data.data", str(tiny_shapes), "--trainer.default_root_dir", str(tmp_path)]
    if name == "shapes":  # its autoencoder is trained separately: pixel space stands in here
        args += ["--model.autoencoder", "identity"]
    cli = build_cli("keyframe", args, run=False)
    assert isinstance(cli.model, KeyframeModule)
    assert cli.model.hparams.image_size == cli.datamodule.size  # linked from data.size
    unet = sum(p.numel() for p in cli.model.denoiser.parameters())
    assert unet < 1_000_000 if name == "tiny" else unet > 5_000_000


FSDP2 = [  # Lightning's FSDP2 (fully_shard) strategy, one checkpoint file
    "--trainer.strategy", "lightning.pytorch.strategies.ModelParallelStrategy",
    "--trainer.strategy.save_distributed_checkpoint", "false",
]  # fmt: skip


def run_child(argv: list[str], root: Path) -> dict:
    """`animatic` with argv in a child process (multi-process strategies relaunch the command
    line); the run's last checkpoint."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
    done = subprocess.run(
        [sys.executable, "-m", "pipeline.cli", *argv],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    return torch.load(root / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)


@pytest.mark.slow
@pytest.mark.parametrize("strategy", ["ddp", "fsdp2"])
@pytest.mark.parametrize("stage", ["keyframe", "interpolate"])
def test_two_process_ddp_and_fsdp_runs(tiny_shapes, tmp_path, stage, strategy):
    """DDP relaunches the command line, so it runs as a child process, not inside pytest. FSDP2
    shards the network, text tower and their EMA copies over the two processes (gloo, CPU)."""
    chosen = ["--trainer.strategy", "ddp"] if strategy == "ddp" else FSDP2
    argv = fit_args(
        tiny_shapes, tmp_path, "--trainer.devices", "2", "--trainer.accelerator", "cpu", *chosen,
        "--trainer.max_steps", "3", "--trainer.val_check_interval", "3",
    )  # fmt: skip
    argv[1], argv[4] = stage, str(ROOT / "configs" / stage / "tiny.yaml")
    if stage == "interpolate":  # 4 clips: one train clip a process, one validation clip
        argv += ["--data.batch_size", "1", "--data.val_fraction", "0.25"]
    ckpt = run_child(argv, tmp_path)
    assert ckpt["global_step"] == 3
    if stage == "keyframe":  # its validation draws a grid of samples
        assert list((tmp_path / "lightning_logs").glob("version_*/samples/step_0000003.png"))
    state = ckpt["state_dict"]  # whole tensors, EMA copies included, whatever the strategy
    assert any(k.startswith("ema_net.") for k in state)
    assert all(type(v) is torch.Tensor for v in state.values())


@pytest.mark.slow
def test_fsdp_run_resumed_at_an_epoch_end_equals_an_uninterrupted_one(tiny_shapes, tmp_path):
    """Two processes under FSDP2: 2 steps (the checkpoint falls on an epoch's last batch),
    then resumed to 4, ends bit-identical to 4 steps without a stop: weights, EMA, optimizer."""

    def run(root: Path, steps: int, *extra: str) -> dict:
        argv = fit_args(
            tiny_shapes, root, "--trainer.devices", "2", "--trainer.accelerator", "cpu", *FSDP2,
            "--trainer.max_steps", str(steps), "--trainer.val_check_interval", "2", *extra,
        )  # fmt: skip
        return run_child(argv, root)

    whole = run(tmp_path / "whole", 4)
    first = run(tmp_path / "stopped", 2)
    assert first["global_step"] == 2
    last = str(tmp_path / "stopped" / "checkpoints" / "last.ckpt")
    resumed = run(tmp_path / "stopped", 4, "--ckpt_path", last)
    assert (resumed["global_step"], resumed["epoch"]) == (whole["global_step"], whole["epoch"])
    a, b = whole["state_dict"], resumed["state_dict"]
    different = [k for k in a if not torch.equal(a[k], b[k])]
    assert not different, f"{len(different)} of {len(a)} tensors differ"
    for state_a, state_b in zip(
        whole["optimizer_states"], resumed["optimizer_states"], strict=True
    ):
        for key, values in state_a["state"].items():
            for name, value in values.items():
                assert torch.equal(value, state_b["state"][key][name]), (key, name)


def test_unknown_config_key_is_a_one_line_error(tiny_shapes, tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text("model:\n  bogus_key: 3\n")
    assert main(fit_args(tiny_shapes, tmp_path, "--config", str(bad))) == 2
    assert "bogus_key" in one_line_error(capsys)


def test_bad_option_value_is_a_one_line_error(tiny_shapes, tmp_path, capsys):
    assert main(fit_args(tiny_shapes, tmp_path, "--model.num_heads", "two")) == 2
    assert "model.num_heads" in one_line_error(capsys)


def test_image_folder_without_captions_is_a_one_line_error(tmp_path, capsys):
    folder = tmp_path / "images"
    folder.mkdir()
    cv2.imwrite(str(folder / "a.png"), np.zeros((32, 32, 3), np.uint8))  # and no a.txt
    assert main(fit_args(folder, tmp_path / "run")) == 2
    assert "a.png" in one_line_error(capsys)


def test_missing_checkpoint_to_resume_is_a_one_line_error(tiny_shapes, tmp_path, capsys):
    missing = tmp_path / "nope.ckpt"
    assert main(fit_args(tiny_shapes, tmp_path, "--ckpt_path", str(missing))) == 2
    assert "nope.ckpt" in one_line_error(capsys)


def test_an_override_without_its_base_is_a_one_line_error(capsys):
    override = ROOT / "configs" / "keyframe" / "shapes-gpu.yaml"
    assert main(["train", "keyframe", "fit", "--config", str(override), "--print_config"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "give its base first" in err and "shapes.yaml" in err
    with pytest.raises(SystemExit) as done:  # --print_config prints and exits
        main(["train", "keyframe", "fit", *config_args(override), "--print_config"])
    assert done.value.code == 0 and "position_bands: 6" in capsys.readouterr().out
