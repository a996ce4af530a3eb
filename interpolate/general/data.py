"""Training windows for the general interpolator, from `animatic dataset layers` clips.

A window is two keys of a clip, `gap` frames apart, and a run of consecutive in-betweens, with
the exact motion of every in-between pixel to both keys and whether each key shows it (from the
clip's layer motion, interpolate.layer_motion), the DIS flows between the keys that sampling
starts from, and the true frames. Windows are drawn at random (gap, start, run, crop, flips, time
reversal) from a generator seeded per worker; runs shorter than `frames` are padded and masked.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
from lightning import LightningDataModule
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from interpolate.general.motion import key_flows
from interpolate.layer_motion import tracks_from_arrays, truth_motion
from keyframe.errors import UserError
from keyframe.media import read_video_file


def layer_clips(folder: str | Path) -> list[dict]:
    """The clips of a layers dataset (records with absolute `path` and `motion`)."""
    folder = Path(folder)
    manifest = folder / "clips.jsonl"
    if not manifest.is_file():
        raise UserError(f"data {folder}: no clips.jsonl (make one with `animatic dataset layers`)")
    records = []
    for n, line in enumerate(manifest.read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
            record["path"] = str(folder / record["path"])
            record["motion"] = str(folder / record["motion"])
        except (ValueError, KeyError, TypeError):
            raise UserError(
                f"{manifest}:{n}: expected a layers clip record with path and motion"
            ) from None
        records.append(record)
    if not records:
        raise UserError(f"{manifest}: no clips")
    return records


def _window(rng: np.random.Generator, count: int, max_gap: int, run: int):
    """(left key, right key, in-between frame numbers) for a clip of `count` frames."""
    gap = int(rng.integers(2, min(max_gap, count - 1) + 1))
    left = int(rng.integers(0, count - gap))
    start = left + 1 + int(rng.integers(0, max(gap - 1 - run, 0) + 1))
    return left, left + gap, list(range(start, min(start + run, left + gap)))


def make_window(record: dict, rng: np.random.Generator, run: int, max_gap: int, crop: int):
    """One training window from one clip record, as a dict of tensors (see the module doc)."""
    frames = read_video_file(record["path"])  # the one video reader (keyframe.media)
    with np.load(record["motion"], allow_pickle=False) as motion:
        ids = motion["ids"]
        tracks = tracks_from_arrays(motion["sizes"], motion["affine"], motion["grid"])
    left, right, middle = _window(rng, len(frames), max_gap, run)
    truth = []
    for f in middle:
        (to0, vis0), (to1, vis1) = truth_motion(tracks, ids, f, [left, right])
        truth.append(np.concatenate([to0, to1, vis0[..., None], vis1[..., None]], -1))
    f01, f10 = key_flows(frames[left], frames[right])
    h, w = frames.shape[1:3]
    top, side = (
        int(rng.integers(0, h - min(crop, h) + 1)),
        int(rng.integers(0, w - min(crop, w) + 1)),
    )
    box = (slice(top, top + crop), slice(side, side + crop))
    sample = {
        "k0": frames[left][box], "k1": frames[right][box],
        "frames": np.stack([frames[f][box] for f in middle]),
        "truth": np.stack([t[box] for t in truth]), "f01": f01[box], "f10": f10[box],
        "t": np.array([(f - left) / (right - left) for f in middle], np.float32),
    }  # fmt: skip
    return _augment(sample, rng)


def _augment(s: dict, rng: np.random.Generator) -> dict:
    """Mirror left-right / up-down (flows negated on that axis) and reverse time."""
    for axis, component in ((1, 0), (0, 1)):
        if rng.random() < 0.5:
            for key in ("k0", "k1", "f01", "f10"):
                s[key] = np.flip(s[key], axis)
            for key in ("frames", "truth"):
                s[key] = np.flip(s[key], axis + 1)
            for key, channels in (("f01", [component]), ("f10", [component]),
                                  ("truth", [component, 2 + component])):  # fmt: skip
                s[key] = s[key].copy()
                s[key][..., channels] *= -1
    if rng.random() < 0.5:
        s["k0"], s["k1"], s["f01"], s["f10"] = s["k1"], s["k0"], s["f10"], s["f01"]
        s["t"] = (1 - s["t"])[::-1].copy()
        s["frames"] = s["frames"][::-1]
        s["truth"] = s["truth"][::-1][..., [2, 3, 0, 1, 5, 4]]
    return s


def to_tensors(s: dict, run: int) -> dict[str, torch.Tensor]:
    """Channels first, images in [-1, 1], padded to `run` frames (`valid` marks the real ones)."""
    n = len(s["t"])
    pad = [n - 1] * (run - n)

    def img(a):
        return torch.from_numpy(np.ascontiguousarray(a)).float() / 127.5 - 1

    frames = img(s["frames"][list(range(n)) + pad]).permute(3, 0, 1, 2)
    truth = torch.from_numpy(np.ascontiguousarray(s["truth"][list(range(n)) + pad])).float()
    return {
        "k0": img(s["k0"]).permute(2, 0, 1), "k1": img(s["k1"]).permute(2, 0, 1),
        "frames": frames, "truth": truth.permute(3, 0, 1, 2),
        "f01": torch.from_numpy(np.ascontiguousarray(s["f01"])).permute(2, 0, 1).float(),
        "f10": torch.from_numpy(np.ascontiguousarray(s["f10"])).permute(2, 0, 1).float(),
        "t": torch.from_numpy(s["t"][list(range(n)) + pad].copy()),
        "valid": torch.tensor([1.0] * n + [0.0] * (run - n)),
    }  # fmt: skip


class LayerWindows(IterableDataset):
    """An endless stream of training windows (each worker its own seeded generator)."""

    def __init__(self, records: list[dict], run: int, max_gap: int, crop: int, seed: int):
        self.records, self.run, self.max_gap, self.crop, self.seed = (
            records, run, max_gap, crop, seed,
        )  # fmt: skip

    def __iter__(self):
        info = get_worker_info()
        worker = 0 if info is None else info.id
        rank = torch.distributed.get_rank() if torch.distributed.is_initialized() else 0
        rng = np.random.default_rng([self.seed, rank, worker, torch.initial_seed() % 2**32])
        while True:
            record = self.records[int(rng.integers(len(self.records)))]
            yield to_tensors(make_window(record, rng, self.run, self.max_gap, self.crop), self.run)


class LayerDataModule(LightningDataModule):
    """`data:` of `animatic train general`: a layers dataset folder and how windows are cut."""

    def __init__(
        self,
        data: str = "data/layers",
        batch_size: int = 4,
        run: int = 8,
        max_gap: int = 16,
        crop: int = 96,
        num_workers: int = 1,
        seed: int = 0,
    ):
        super().__init__()
        if batch_size < 1 or run < 1 or max_gap < 2 or crop < 16:
            raise UserError(
                "data: expected batch_size >= 1, run >= 1, max_gap >= 2 and crop >= 16, got "
                f"{batch_size}, {run}, {max_gap}, {crop}"
            )
        self.data, self.batch_size, self.run = data, batch_size, run
        self.max_gap, self.crop, self.num_workers, self.seed = max_gap, crop, num_workers, seed

    def train_dataloader(self) -> DataLoader:
        windows = LayerWindows(layer_clips(self.data), self.run, self.max_gap, self.crop, self.seed)
        return DataLoader(
            windows, batch_size=self.batch_size, num_workers=self.num_workers,
            persistent_workers=self.num_workers > 0,
        )  # fmt: skip
