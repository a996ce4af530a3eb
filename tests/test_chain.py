"""The GPU configuration family fits together: scripts/train_base.sh with DRY=1 runs dataset ->
autoencoder -> keyframe -> interpolator (from the keyframe model) -> export -> render on a CPU
with the configs/*/base.yaml files at toy size; the base configs print."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from pipeline.cli import main

ROOT = Path(__file__).resolve().parents[1]
FAMILY = ["autoencoder/base", "keyframe/base", "interpolate/base", "keyframe/base-512",
          "interpolate/base-512"]  # fmt: skip


def _config(name: str, capsys) -> dict:
    stage = name.split("/")[0]
    with pytest.raises(SystemExit):
        # base-512.yaml holds only what differs from base.yaml and is given after it
        files = [name.replace("-512", ""), name] if name.endswith("-512") else [name]
        configs = [arg for f in files for arg in ("--config", str(ROOT / "configs" / f"{f}.yaml"))]
        main(["train", stage, "fit", *configs, "--print_config"])
    return yaml.safe_load(capsys.readouterr().out)


def test_the_family_shares_one_autoencoder_and_one_u_net(capsys):
    configs = {name: _config(name, capsys) for name in FAMILY}
    autoencoders = {configs[n]["model"]["autoencoder"] for n in FAMILY if "autoencoder" not in n}
    ae_root = configs["autoencoder/base"]["trainer"]["default_root_dir"]
    assert autoencoders == {f"{ae_root}/export"}
    keys = ("model_channels", "channel_mult", "num_res_blocks", "attention_levels", "num_heads",
            "text_model_name", "text_pretrained", "text_context_length")  # fmt: skip
    unets = {tuple(str(configs[n]["model"][k]) for k in keys) for n in FAMILY[1:]}
    assert len(unets) == 1
    keyframe_root = configs["keyframe/base"]["trainer"]["default_root_dir"]
    init = configs["interpolate/base"]["model"]["init_from"]
    assert init == f"{keyframe_root}/checkpoints/last.ckpt"
    assert configs["keyframe/base-512"]["data"]["size"] == 512


@pytest.mark.slow
def test_dry_chain_runs_end_to_end_on_a_cpu(tmp_path):
    env = {**os.environ, "DRY": "1", "PYTHON": sys.executable, "OMP_NUM_THREADS": "1",
           "PYTHONPATH": str(ROOT)}  # fmt: skip
    done = subprocess.run(
        ["bash", "scripts/train_base.sh", str(tmp_path)],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=1800,
    )  # fmt: skip
    assert done.returncode == 0, (done.stdout + done.stderr)[-4000:]
    from pipeline.io_video import read_video_frames

    video, fps = read_video_frames(tmp_path / "film.mp4")
    assert video.shape == (24, 64, 64, 3) and fps == 24
    assert (tmp_path / "export" / "interpolate" / "model.safetensors").is_file()
