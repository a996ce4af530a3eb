"""Training that survives: debug runs leave nothing to resume from, a run killed with -9 resumes
to the very weights of one that never stopped, loaders continue mid-epoch, bad or truncated
files are skipped and counted, and own data works from a relative path."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from torch.utils.data import Dataset

from keyframe.datasets import ClipDataset, ImageCaptionDataset
from keyframe.records import load_records
from keyframe.resume import EpochSampler, ResumableLoader
from pipeline.cli import main

ROOT = Path(__file__).resolve().parents[1]
STAGES = ("keyframe", "interpolate")
CONFIG = {stage: str(ROOT / "configs" / stage / "tiny.yaml") for stage in STAGES}


def fit_args(stage: str, data: Path, root: Path, *extra: str) -> list[str]:
    return [
        "train", stage, "fit", "--config", CONFIG[stage], "--data.data", str(data),
        "--trainer.default_root_dir", str(root), "--trainer.enable_progress_bar", "false",
        *extra,
    ]  # fmt: skip


@pytest.mark.slow
def test_fast_dev_run_leaves_nothing_a_resume_would_pick_up(tiny_shapes, tmp_path, one_thread):
    assert main(fit_args("keyframe", tiny_shapes, tmp_path, "--trainer.fast_dev_run", "true")) == 0
    assert not list(tmp_path.rglob("*.ckpt"))


class Numbers(Dataset):
    def __len__(self) -> int:
        return 10

    def __getitem__(self, key):
        index, seed = key
        return {"index": index, "draw": np.random.default_rng([seed, index]).integers(1000)}


def _batches(loader) -> list[list[int]]:
    return [batch["index"].tolist() for batch in loader]


def test_loader_resumes_mid_epoch_with_the_same_batches_and_draws():
    def loader() -> ResumableLoader:
        return ResumableLoader(Numbers(), batch_size=3, sampler=EpochSampler(Numbers(), seed=5))

    whole = loader()
    whole.sampler.set_epoch(2)
    expected = [batch for batch in whole]
    first = loader()
    first.sampler.set_epoch(2)
    iterator = iter(first)
    head = [next(iterator), next(iterator)]
    state = first.state_dict()
    assert state == {"epoch": 2, "batches": 2}
    resumed = loader()
    resumed.load_state_dict(state)
    tail = list(resumed)
    got = head + tail
    assert [b["index"].tolist() for b in got] == [b["index"].tolist() for b in expected]
    assert [b["draw"].tolist() for b in got] == [b["draw"].tolist() for b in expected]
    other = loader()
    other.sampler.set_epoch(3)  # another epoch: another order and other draws
    assert _batches(other) != [b["index"].tolist() for b in expected]


def test_a_checkpoint_on_an_epochs_last_batch_resumes_at_the_next_epoch_whole():
    """Saved after the last batch of epoch 2: Lightning starts epoch 3 on resume (setting the
    sampler's epoch), and all of epoch 3 must come, as in a run that never stopped (skipping
    epoch 2's batch count in it lost a whole epoch and shifted every later one)."""

    def loader() -> ResumableLoader:
        return ResumableLoader(Numbers(), batch_size=3, sampler=EpochSampler(Numbers(), seed=5))

    first = loader()
    first.sampler.set_epoch(2)
    assert len(list(first)) == len(first)
    state = first.state_dict()
    assert state == {"epoch": 2, "batches": len(first)}
    resumed, whole = loader(), loader()
    resumed.load_state_dict(state)
    resumed.sampler.set_epoch(3)  # what Lightning does at the next epoch's start
    whole.sampler.set_epoch(3)
    assert _batches(resumed) == _batches(whole) and len(_batches(whole)) == len(whole)


def _run(argv: list[str]) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
    return subprocess.run(
        [sys.executable, "-m", "pipeline.cli", *argv],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=600,
    )  # fmt: skip


@pytest.mark.slow
@pytest.mark.parametrize(
    ("stage", "data_args", "steps", "every", "kill_at"),
    [
        ("keyframe", ["--data.batch_size", "3"], 60, 20, 31),  # 7 batches an epoch
        ("interpolate", ["--data.batch_size", "2"], 24, 8, 13),  # 5 batches an epoch
    ],
)
@pytest.mark.slow
def test_kill_9_then_resume_gives_the_uninterrupted_weights(
    tiny_shapes, tmp_path_factory, stage, data_args, steps, every, kill_at
):
    """A run killed (SIGKILL) between checkpoints, resumed with the README's command (its
    saved config and --ckpt_path last.ckpt), ends with the weights, EMA and optimizer state
    of a run that never stopped; the checkpoint it resumes from is mid-epoch."""
    data = tmp_path_factory.mktemp("clips") / "shapes"
    assert main(["dataset", "shapes", "--out", str(data), "--clips", "12", "--stills", "24",
                 "--size", "32", "--frames", "12", "--seed", "3"]) == 0  # fmt: skip
    common = [*data_args, "--trainer.max_steps", str(steps),
              "--trainer.val_check_interval", str(every)]  # fmt: skip
    clean, killed = tmp_path_factory.mktemp("clean"), tmp_path_factory.mktemp("killed")
    done = _run(fit_args(stage, data, clean, *common))
    assert done.returncode == 0, done.stderr[-2000:]
    kill = ["--trainer.callbacks+=tests.killer.KillAt", f"--trainer.callbacks.step={kill_at}"]
    done = _run(fit_args(stage, data, killed, *common, *kill))
    assert done.returncode == -9, done.stderr[-2000:]
    last = killed / "checkpoints" / "last.ckpt"
    assert torch.load(last, weights_only=True)["global_step"] == every  # steps after it are lost
    config = killed / "lightning_logs" / "version_0" / "config.yaml"
    done = _run(["train", stage, "fit", "--config", str(config), "--ckpt_path", str(last)])
    assert done.returncode == 0, done.stderr[-2000:]
    a, b = (torch.load(p / "checkpoints" / "last.ckpt", weights_only=True) for p in (clean, killed))
    assert a["global_step"] == b["global_step"] == steps
    weights_a, weights_b = a["state_dict"], b["state_dict"]
    different = [k for k in weights_a if not torch.equal(weights_a[k], weights_b[k])]
    assert not different, f"{len(different)} of {len(weights_a)} tensors differ"
    for state_a, state_b in zip(a["optimizer_states"], b["optimizer_states"], strict=True):
        for key, values in state_a["state"].items():
            for name, value in values.items():
                assert torch.equal(value, state_b["state"][key][name]), (key, name)


# ---------------------------------------------------------------- bad files


def _truncate(path: Path, share: float) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * share)])


@pytest.fixture(scope="module")
def damaged(tmp_path_factory) -> tuple[Path, list[Path]]:
    """A dataset of 40 stills and 20 clips with 5% of each bad: a truncated and a garbage PNG,
    and a clip cut to 40% of its bytes."""
    out = tmp_path_factory.mktemp("damaged") / "shapes"
    assert main(["dataset", "shapes", "--out", str(out), "--clips", "20", "--stills", "40",
                 "--size", "32", "--frames", "12", "--seed", "5"]) == 0  # fmt: skip
    stills = sorted((out / "stills").glob("*.png"))
    clips = sorted((out / "clips").glob("*.avi"))
    _truncate(stills[3], 0.3)
    stills[7].write_bytes(b"this is not a png")
    _truncate(clips[2], 0.4)
    return out, [stills[3], stills[7], clips[2]]


def test_datasets_replace_a_bad_file_and_name_it(damaged):
    out, bad = damaged
    images = ImageCaptionDataset(load_records(out, "image"), 32)
    index = [r["path"] for r in images.records].index(str(bad[0]))
    item = images[(index, 7)]
    assert item["image"].shape == (3, 32, 32) and str(bad[0]) in item["bad"]
    assert images[(index + 1, 7)]["bad"] == ""
    clips = ClipDataset(load_records(out, "video"), num_frames=8, size=32)
    index = [r["path"] for r in clips.records].index(str(bad[2]))
    item = clips[(index, 7)]
    assert item["video"].shape == (3, 8, 32, 32) and item["bad"].startswith(str(bad[2]))


@pytest.mark.slow
@pytest.mark.parametrize(("stage", "steps"), [("keyframe", "8"), ("interpolate", "6")])
def test_training_over_5_percent_bad_files_finishes_and_says_which(
    damaged, tmp_path, capsys, one_thread, stage, steps
):
    out, bad = damaged
    argv = fit_args(stage, out, tmp_path, "--trainer.max_steps", steps,
                    "--data.val_fraction", "0", "--trainer.limit_val_batches", "0")  # fmt: skip
    assert main(argv) == 0
    lines = [x for x in capsys.readouterr().err.splitlines() if "warning: data: skipped" in x]
    mine = [str(p) for p in bad if (p.suffix == ".avi") == (stage == "interpolate")]
    for path in mine:  # a line when each bad file is first met ...
        assert sum(f"data: skipped {path}: " in line for line in lines) == 1, lines
    summary = lines[-1]  # ... and a summary at the end
    assert f"bad files: {', '.join(sorted(mine))}" in summary, summary
    assert f"from {len(mine)} bad files" in summary


@pytest.mark.slow
def test_too_many_bad_files_stop_the_run_with_one_line(damaged, tmp_path, capsys, one_thread):
    out, _ = damaged
    argv = fit_args("keyframe", out, tmp_path, "--trainer.max_steps", "8",
                    "--data.max_bad_fraction", "0.01")  # fmt: skip
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert "files are unreadable, more than data.max_bad_fraction 0.01" in err


@pytest.mark.slow
def test_own_images_from_a_relative_path(tmp_path, monkeypatch, one_thread):
    folder = tmp_path / "own_imgs"
    folder.mkdir()
    for i in range(10):
        cv2.imwrite(str(folder / f"img{i}.png"), np.full((32, 32, 3), 20 * i, np.uint8))
        (folder / f"img{i}.txt").write_text(f"a grey square number {i}")
    monkeypatch.chdir(tmp_path)
    argv = fit_args("keyframe", Path("own_imgs"), Path("run"), "--trainer.fast_dev_run", "true")
    assert main(argv) == 0
