"""Lightning data modules for both stages: a seeded train/val split of a source's records,
checked loader options, resumable training loaders, and the switch to cached latents.

Records: keyframe.records; decoding and resizing: keyframe.frames; datasets: keyframe.datasets.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence

import numpy as np
import torch
from lightning import LightningDataModule
from torch.utils.data import DataLoader, Dataset

from keyframe.datasets import ClipDataset, ImageCaptionDataset, caption_choices
from keyframe.errors import UserError
from keyframe.records import clip_records, image_records
from keyframe.resume import EpochSampler, ResumableLoader


def split_records(
    records: Sequence[dict], val_fraction: float, seed: int
) -> tuple[list[dict], list[dict]]:
    """A seeded random (train, val) split; val gets at least one record when asked for any."""
    if not 0.0 <= val_fraction < 1.0:
        raise UserError(f"val_fraction {val_fraction}: expected a number in [0, 1)")
    order = np.random.default_rng(seed).permutation(len(records))
    n_val = (
        0
        if val_fraction == 0
        else min(max(1, math.ceil(val_fraction * len(records))), len(records) - 1)
    )
    val = [records[i] for i in sorted(order[:n_val])]
    train = [records[i] for i in sorted(order[n_val:])]
    return train, val


def check_loader_options(batch_size: object, num_workers: object) -> None:
    """UserError (one line, before any work) unless batch_size >= 1 and num_workers >= 0."""
    for name, value, low in (("batch_size", batch_size, 1), ("num_workers", num_workers, 0)):
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise UserError(f"data.{name}: expected a whole number >= {low}, got {value!r}")


def check_bad_fraction(value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= 1:
        raise UserError(f"data.max_bad_fraction: expected a number from 0 to 1, got {value!r}")


def _run_seed(seed: int) -> int:
    """The training order's seed: the data seed with the run's seed_everything value."""
    run = int(os.environ.get("PL_GLOBAL_SEED", 0))
    return int(np.random.SeedSequence([seed, run]).generate_state(1)[0]) % 2**31


def _loader(dataset: Dataset | None, batch_size: int, num_workers: int, train: bool, seed=0):
    """Training: a ResumableLoader in the EpochSampler's order (keyframe.resume); else the
    dataset in order."""
    if dataset is None:
        return []
    options = dict(
        batch_size=batch_size,
        num_workers=num_workers,
        persistent_workers=num_workers > 0,
        pin_memory=torch.cuda.is_available(),
    )
    if not train:
        return DataLoader(dataset, **options)
    sampler = EpochSampler(dataset, _run_seed(seed))
    drop_last = len(sampler) > batch_size
    return ResumableLoader(dataset, sampler=sampler, drop_last=drop_last, **options)


class ImageDataModule(LightningDataModule):
    """Captioned images (or frames of captioned clips) for the keyframe stage."""

    def __init__(
        self,
        data: str,
        size: int,
        batch_size: int = 16,
        num_workers: int = 0,
        val_fraction: float = 0.05,
        seed: int = 0,
        flip: bool = False,
        mode: str = "crop",
        latents: str | None = None,
        max_bad_fraction: float = 0.1,
    ):
        super().__init__()
        check_loader_options(batch_size, num_workers)
        check_bad_fraction(max_bad_fraction)
        self.max_bad_fraction = max_bad_fraction
        self.data, self.size, self.batch_size, self.num_workers = (
            data,
            size,
            batch_size,
            num_workers,
        )
        self.val_fraction, self.seed, self.flip, self.mode = val_fraction, seed, flip, mode
        self.latents = latents
        self.train_set: Dataset | None = None
        self.val_set: Dataset | None = None

    def use_latents(self, ae, build: bool = True, barrier=lambda: None) -> None:
        """Train on latents cached at `self.latents` (see keyframe.latents), built if `build`
        and missing or stale; `barrier` waits for the process that builds it."""
        from keyframe import latents as cache

        self.setup()
        records = self.train_set.records
        videos = [r["path"] for r in records if r["kind"] != "image"]
        if videos:
            raise UserError(
                f"data.latents: caching needs still images, but {videos[0]} is a video "
                "(a random frame is drawn from it each time); drop data.latents"
            )
        identity = cache.cache_identity(ae, records, size=self.size, mode=self.mode, flip=self.flip)
        if build:
            device = next(iter(ae.parameters()), torch.empty(0)).device
            images = ImageCaptionDataset(records, self.size, mode=self.mode)
            cache.ensure_cache(
                self.latents, identity, records,
                lambda groups: cache.encode_images(
                    ae, images, groups, self.flip, self.batch_size, device
                ),
            )  # fmt: skip
        barrier()
        captions = [caption_choices(r) for r in records]
        self.train_set = cache.CachedImageDataset(self.latents, captions, self.flip, seed=None)

    def setup(self, stage: str | None = None) -> None:
        if self.train_set is not None:
            return
        train, val = split_records(image_records(self.data), self.val_fraction, self.seed)
        self.train_set = ImageCaptionDataset(train, self.size, flip=self.flip, mode=self.mode)
        if val:
            self.val_set = ImageCaptionDataset(val, self.size, mode=self.mode, seed=self.seed)

    def train_dataloader(self) -> DataLoader:
        return _loader(self.train_set, self.batch_size, self.num_workers, True, self.seed)

    def val_dataloader(self) -> DataLoader | list:
        return _loader(self.val_set, self.batch_size, self.num_workers, train=False)


class ClipDataModule(LightningDataModule):
    """Captioned clips, num_frames long at the given strides, for the interpolation stage."""

    def __init__(
        self,
        data: str,
        num_frames: int,
        size: int,
        strides: tuple[int, ...] = (1,),
        batch_size: int = 4,
        num_workers: int = 0,
        val_fraction: float = 0.05,
        seed: int = 0,
        mode: str = "crop",
        latents: str | None = None,
        max_bad_fraction: float = 0.1,
    ):
        super().__init__()
        check_loader_options(batch_size, num_workers)
        check_bad_fraction(max_bad_fraction)
        self.max_bad_fraction = max_bad_fraction
        self.data, self.num_frames, self.size, self.strides = data, num_frames, size, tuple(strides)
        self.batch_size, self.num_workers = batch_size, num_workers
        self.val_fraction, self.seed, self.mode = val_fraction, seed, mode
        self.latents = latents
        self.train_set: Dataset | None = None
        self.val_set: Dataset | None = None

    def use_latents(self, ae, build: bool = True, barrier=lambda: None) -> None:
        """Train on every clip frame's latents cached at `self.latents` (see keyframe.latents),
        built if `build` and missing or stale; windows are cut from them as from the videos."""
        from keyframe import latents as cache

        self.setup()
        clips = self.train_set
        identity = cache.cache_identity(ae, clips.records, size=self.size, mode=self.mode)
        if build:
            device = next(iter(ae.parameters()), torch.empty(0)).device
            cache.ensure_cache(
                self.latents, identity, clips.records,
                lambda groups: cache.encode_clips(
                    ae, clips.records, groups, self.size, self.mode, device
                ),
            )  # fmt: skip
        barrier()
        self.train_set = cache.CachedClipDataset(self.latents, clips)

    def setup(self, stage: str | None = None) -> None:
        if self.train_set is not None:
            return
        train, val = split_records(clip_records(self.data), self.val_fraction, self.seed)
        args = dict(
            num_frames=self.num_frames, size=self.size, strides=self.strides, mode=self.mode
        )
        self.train_set = ClipDataset(train, **args)
        if val:
            self.val_set = ClipDataset(val, **args, seed=self.seed)

    def train_dataloader(self) -> DataLoader:
        return _loader(self.train_set, self.batch_size, self.num_workers, True, self.seed)

    def val_dataloader(self) -> DataLoader | list:
        return _loader(self.val_set, self.batch_size, self.num_workers, train=False)
