"""Training that resumes exactly and survives bad files.

A run killed at any step and resumed from its last checkpoint (`--ckpt_path`) continues as if it
had never stopped, because nothing random depends on the process's history:

- `EpochSampler` orders each epoch from (seed, epoch) and hands every item a draw seed from the
  same pair, so augmentation (crops, flips, clip windows) does not depend on which worker or
  process reads it; `ResumableLoader` puts its position in the epoch into the checkpoint
  (Lightning saves and restores loaders with `state_dict` / `load_state_dict`), so a resumed
  run starts at the next batch, not at the epoch's first.
- `StepSeeds` seeds torch, numpy and random before every training batch from (run seed, epoch,
  batch, rank), so the noise, masks and dropout of batch k are the same after a resume.

`BadSamples` counts the unreadable files the datasets skipped (see `robust_item`), warns once
per file, and stops the run with one line when more than `data.max_bad_fraction` of the files
are bad.
"""

from __future__ import annotations

import os
import random
import warnings
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import torch
from lightning.pytorch.callbacks import Callback
from torch.utils.data import DataLoader, Dataset, DistributedSampler

from keyframe.errors import UserError

BAD_SKIPS = 8  # a sample whose file is bad is replaced by the next one; this many bad in a row stop


def draw_seed(seed: int, epoch: int) -> int:
    """The seed of every item's random draws in one epoch."""
    return int(np.random.SeedSequence([seed, epoch]).generate_state(1)[0])


class EpochSampler(DistributedSampler):
    """Indices in a fixed order per (seed, epoch), split over the distributed ranks, each with
    its epoch's draw seed: items are ``(index, draw_seed)``. ``skip`` drops the first items of
    the next epoch iterated (set when a run resumes mid-epoch). A DistributedSampler, so
    Lightning leaves it in place under DDP/FSDP instead of wrapping it."""

    def __init__(self, dataset: Dataset, seed: int, shuffle: bool = True):
        dist = torch.distributed
        ready = dist.is_available() and dist.is_initialized()
        replicas, rank = (dist.get_world_size(), dist.get_rank()) if ready else (1, 0)
        super().__init__(dataset, replicas, rank, shuffle=shuffle, seed=seed)
        self.skip = 0

    def __iter__(self) -> Iterator[tuple[int, int]]:
        indices = list(super().__iter__())
        skip, self.skip = self.skip, 0
        seed = draw_seed(self.seed, self.epoch)
        return iter([(index, seed) for index in indices[skip:]])


class ResumableLoader(DataLoader):
    """A training DataLoader whose position in its epoch goes into checkpoints."""

    _done = 0  # batches of the current epoch handed out
    _resume_at = 0  # batches to skip at the next iteration (from a checkpoint)

    def __iter__(self) -> Iterator[Any]:
        self._done, self._resume_at = self._resume_at, 0
        for batch in super().__iter__():
            self._done += 1
            yield batch

    def state_dict(self) -> dict[str, int]:
        return {"epoch": int(getattr(self.sampler, "epoch", 0)), "batches": int(self._done)}

    def load_state_dict(self, state: dict[str, int]) -> None:
        if not isinstance(self.sampler, EpochSampler):
            return  # Lightning swapped the sampler (e.g. overfit_batches): start the epoch over
        if int(state["batches"]) >= len(self):
            # Saved on the epoch's last batch: Lightning resumes at the next epoch's start (and
            # sets its sampler epoch), so nothing of it may be skipped.
            return
        self.sampler.set_epoch(int(state["epoch"]))
        self.sampler.skip = int(state["batches"]) * int(self.batch_size or 1)
        self._resume_at = int(state["batches"])


def item_key(key: int | tuple[int, int], seed: int | None) -> tuple[int, int | None]:
    """(index, draw seed) of a dataset key: an EpochSampler item, or a plain index drawn with
    the dataset's own seed (None: torch's RNG)."""
    if isinstance(key, tuple):
        return int(key[0]), int(key[1])
    return int(key), seed


def _one_line(err: BaseException) -> str:
    return " ".join(str(err).split())[:200] or type(err).__name__


def robust_item(load: Callable[[int], dict], index: int, records: list[dict]) -> dict:
    """``load(index)``, or when its file is bad (unreadable, truncated, too short), the next
    good item's; every bad file met is listed in the item's ``"bad"`` (one string, lines of
    'path: reason'), which `BadSamples` counts. Too many bad in a row is a UserError."""
    if not 0 <= index < len(records):
        raise IndexError(f"item {index} of {len(records)}")  # also ends `for item in dataset`
    bad = []
    for step in range(min(BAD_SKIPS, len(records))):
        i = (index + step) % len(records)
        try:
            item = load(i)
        except (UserError, OSError, ValueError, RuntimeError) as err:
            path = str(records[i]["path"])
            bad.append(f"{path}: {_one_line(err).removeprefix(path + ': ')}")
            continue
        return {**item, "bad": "\n".join(bad)}
    raise UserError(f"data: {len(bad)} unreadable files in a row, e.g. {bad[-1]}")


class BadSamples(Callback):
    """Counts the bad files the training set skipped, warns once per file, stops the run past
    `data.max_bad_fraction` of the files, and says at the end how many were skipped and which."""

    def __init__(self) -> None:
        self.bad: dict[str, str] = {}  # path -> reason
        self.skipped = 0  # samples replaced

    def on_train_batch_start(self, trainer, pl_module, batch: Any, batch_idx: int) -> None:
        lines = batch.get("bad") if isinstance(batch, dict) else None
        for line in (entry for text in lines or () for entry in text.splitlines() if entry):
            path, _, reason = line.partition(": ")
            self.skipped += 1
            if path not in self.bad:
                self.bad[path] = reason
                warnings.warn(f"data: skipped {line}", stacklevel=1)
        self._check(trainer)

    def _check(self, trainer) -> None:
        total = len(getattr(getattr(trainer.datamodule, "train_set", None), "records", ()) or ())
        limit = getattr(trainer.datamodule, "max_bad_fraction", 0.1)
        if total and len(self.bad) > limit * total:
            raise UserError(
                f"data: {len(self.bad)} of {total} files are unreadable, more than "
                f"data.max_bad_fraction {limit:g}; first: {next(iter(self.bad))}"
            )

    def on_train_end(self, trainer, pl_module) -> None:
        if self.bad:
            listed = ", ".join(sorted(self.bad))
            warnings.warn(
                f"data: skipped {self.skipped} samples from {len(self.bad)} bad files: {listed}",
                stacklevel=1,
            )

    def state_dict(self) -> dict[str, Any]:
        return {"bad": dict(self.bad), "skipped": self.skipped}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.bad, self.skipped = dict(state.get("bad", {})), int(state.get("skipped", 0))


class StepSeeds(Callback):
    """Seeds torch (every device), numpy and random before each training batch from the run's
    seed, the epoch, the batch index and the rank: the randomness of a batch is the same in a
    resumed run as in one that never stopped (and differs between ranks)."""

    def __init__(self) -> None:
        self.base: int | None = None

    def on_fit_start(self, trainer, pl_module) -> None:
        seed = os.environ.get("PL_GLOBAL_SEED")  # seed_everything's, as EpochSampler's order
        self.base = int(seed) if seed is not None else torch.initial_seed() % 2**63

    def on_train_batch_start(self, trainer, pl_module, batch: Any, batch_idx: int) -> None:
        parts = [self.base or 0, trainer.current_epoch, batch_idx, trainer.global_rank]
        torch_seed, numpy_seed = np.random.SeedSequence(parts).generate_state(2, np.uint64)
        torch.manual_seed(int(torch_seed))
        np.random.seed(int(numpy_seed) % 2**32)
        random.seed(int(numpy_seed))
