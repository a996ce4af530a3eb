"""Training the motion prior (interpolate.motion) on object tracks: `animatic train motion`.

Tracks come from a dataset's clips.jsonl: each object's `centres` (one [x, y] per frame, canvas
units) and optional `radius` (canvas widths). The shapes generator writes both; for your own
clips, any point tracker's output in that form will do. Each training sample is a point of an
object (its centre, or with `spread` a point inside its radius), keys at random
gaps around a segment (sometimes evenly spaced, sometimes without the key before or after) and
a frame inside the segment to predict.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import torch
from lightning import LightningDataModule, LightningModule
from torch.utils.data import DataLoader, Dataset

from interpolate.motion import MotionPrior
from keyframe.data import check_loader_options
from keyframe.errors import UserError

MANIFEST = "clips.jsonl"


def point_tracks(tracks: torch.Tensor, radius: torch.Tensor, generator=None) -> torch.Tensor:
    """Tracks (b, f, 2) of points spread uniformly over discs of `radius` (b,) around them."""
    b = len(tracks)
    angle = torch.rand(b, generator=generator) * (2 * math.pi)
    reach = radius * torch.rand(b, generator=generator).sqrt()
    offset = torch.stack([angle.cos(), angle.sin()], -1) * reach[:, None]
    return tracks + offset[:, None]


def sample_layouts(
    tracks: torch.Tensor,
    fps: torch.Tensor,
    max_gap: int = 16,
    context_rate: float = 0.8,
    even_rate: float = 0.5,
    still_rate: float = 0.1,
    generator=None,
) -> tuple[torch.Tensor, ...]:
    """Random keys around a segment of each track (b, f, 2) and a frame inside it to predict:
    (pos (b, 4, 2), times (b, 4) s, mask (b, 4), query (b,) s, target (b, 2)). The segment is 2
    to `max_gap` frames long (at most the track's length) anywhere on the track; the keys before
    and after it are 1 to `max_gap` frames away (with `even_rate`, as far as the segment is
    long), each kept with `context_rate` where it falls on the track; `still_rate` of samples
    do not move at all."""
    b, f = tracks.shape[:2]
    top = min(max_gap, f - 1)
    if top < 2:
        raise ValueError(f"tracks of {f} frames are too short for segments (need 3+)")

    def draw(low, high) -> torch.Tensor:
        return low + (torch.rand(b, generator=generator) * (high - low + 1)).long()

    span = draw(2, top)
    start = draw(0, f - 1 - span)
    end = start + span
    before, after = draw(1, top), draw(1, top)
    even = torch.rand(b, generator=generator) < even_rate
    before, after = torch.where(even, span, before), torch.where(even, span, after)
    frames = torch.stack([start - before, start, end, end + after], 1)
    mask = torch.ones(b, 4)
    for slot in (0, 3):
        kept = torch.rand(b, generator=generator) < context_rate
        mask[:, slot] = (kept & (frames[:, slot] >= 0) & (frames[:, slot] < f)).float()
    frames = torch.where(mask > 0, frames, start[:, None])
    query = draw(start + 1, end - 1)
    rows = torch.arange(b)
    pos = tracks[rows[:, None], frames]
    target = tracks[rows, query]
    still = torch.rand(b, generator=generator) < still_rate
    pos = torch.where(still[:, None, None], pos[:, 1:2].expand(-1, 4, -1), pos)
    target = torch.where(still[:, None], pos[:, 1], target)
    seconds = 1.0 / fps.to(torch.float32)
    return pos, frames * seconds[:, None], mask, query * seconds, target


def read_tracks(data: str | Path, num_frames: int) -> list[tuple[np.ndarray, float, float]]:
    """(track (num_frames, 2), radius, fps) of every object in DATA/clips.jsonl with at least
    num_frames centres (the first num_frames are used)."""
    path = Path(data) / MANIFEST
    if not path.is_file():
        raise UserError(f"data {data}: no {MANIFEST} (make one with `animatic dataset`)")
    tracks = []
    for line_no, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        where = f"{path}:{line_no}"
        try:
            record = json.loads(line)
            fps = float(record["fps"])
            objects = record.get("objects", [])
        except (ValueError, KeyError, TypeError) as err:
            raise UserError(f"{where}: expected a JSON object with fps ({err})") from None
        for k, obj in enumerate(objects):
            centres = np.asarray(obj.get("centres", []), dtype=np.float64)
            if centres.ndim != 2 or centres.shape[-1] != 2:
                raise UserError(f"{where}: objects[{k}].centres must be a list of [x, y] pairs")
            if len(centres) >= num_frames:
                tracks.append((centres[:num_frames], float(obj.get("radius", 0.0)), fps))
    if not tracks:
        raise UserError(f"{path}: no object tracks of {num_frames}+ frames (objects[].centres)")
    return tracks


class TrackDataset(Dataset):
    """(track (f, 2) float32, radius, fps) per object."""

    def __init__(self, tracks: list[tuple[np.ndarray, float, float]]):
        self.tracks = tracks

    def __len__(self) -> int:
        return len(self.tracks)

    def __getitem__(self, i: int):
        track, radius, fps = self.tracks[i]
        return torch.from_numpy(track.astype(np.float32)), torch.tensor(radius), torch.tensor(fps)


class TrackDataModule(LightningDataModule):
    """Object tracks of a dataset's clips, split by a seeded shuffle into train and validation."""

    def __init__(
        self,
        data: str,
        num_frames: int = 48,
        batch_size: int = 1024,
        val_fraction: float = 0.05,
        seed: int = 0,
        num_workers: int = 0,
    ):
        super().__init__()
        check_loader_options(batch_size, 0)
        self.data, self.num_frames, self.batch_size = data, num_frames, batch_size
        self.val_fraction, self.seed, self.num_workers = val_fraction, seed, num_workers
        self.train_set: TrackDataset | None = None
        self.val_set: TrackDataset | None = None

    def setup(self, stage: str | None = None) -> None:
        if self.train_set is not None:
            return
        tracks = read_tracks(self.data, self.num_frames)
        order = np.random.default_rng(self.seed).permutation(len(tracks))
        n_val = int(round(len(tracks) * self.val_fraction)) if len(tracks) > 1 else 0
        self.val_set = TrackDataset([tracks[i] for i in order[:n_val]])
        self.train_set = TrackDataset([tracks[i] for i in order[n_val:]])

    def train_dataloader(self) -> DataLoader:
        return DataLoader(
            self.train_set, self.batch_size, shuffle=True, drop_last=False,
            num_workers=self.num_workers,
        )  # fmt: skip

    def val_dataloader(self) -> DataLoader:
        return DataLoader(self.val_set, self.batch_size, num_workers=self.num_workers)


class MotionModule(LightningModule):
    """Trains a MotionPrior(hidden, depth) with an L1 loss on predicted positions; each batch of
    tracks gives `draws` samples per track, points within `spread` times each object's radius of
    its centre (0: the centres, which is what flow init's parts move by; see `sample_layouts` for
    the other arguments).
    Validation draws the same layouts every time (seeded) and logs the mean error in canvas
    units (`val/error`; times 64 for pixels at 64 px)."""

    def __init__(
        self,
        hidden: int = 256,
        depth: int = 3,
        lr: float = 2e-3,
        weight_decay: float = 0.0,
        max_gap: int = 16,
        context_rate: float = 0.8,
        even_rate: float = 0.5,
        still_rate: float = 0.1,
        draws: int = 4,
        spread: float = 0.0,
    ):
        super().__init__()
        self.save_hyperparameters()
        self.prior = MotionPrior(hidden, depth)

    def _error(self, batch, generator=None) -> tuple[torch.Tensor, torch.Tensor]:
        tracks, radius, fps = batch
        h = self.hparams
        tracks, radius, fps = (x.repeat_interleave(h.draws, 0) for x in (tracks, radius, fps))
        points = point_tracks(tracks.cpu(), radius.cpu() * h.spread, generator)
        pos, times, mask, query, target = (
            x.to(self.device)
            for x in sample_layouts(
                points, fps.cpu(), h.max_gap, h.context_rate, h.even_rate, h.still_rate, generator
            )
        )
        miss = self.prior(pos, times, mask, query) - target
        return (miss.abs() * self.prior.scale).mean(), miss.norm(dim=-1).mean()

    def training_step(self, batch, batch_idx):
        loss, error = self._error(batch)
        self.log("train/loss", loss, prog_bar=True)
        self.log("train/error", error)
        return loss

    def validation_step(self, batch, batch_idx):
        generator = torch.Generator().manual_seed(batch_idx)
        loss, error = self._error(batch, generator)
        self.log("val/loss", loss, sync_dist=True)
        self.log("val/error", error, prog_bar=True, sync_dist=True)

    def configure_optimizers(self):
        h = self.hparams
        opt = torch.optim.AdamW(self.parameters(), lr=h.lr, weight_decay=h.weight_decay)
        total = max(int(self.trainer.estimated_stepping_batches), 1)
        schedule = torch.optim.lr_scheduler.OneCycleLR(opt, h.lr, total_steps=total, pct_start=0.05)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": schedule, "interval": "step"}}
