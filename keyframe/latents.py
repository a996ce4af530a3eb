"""Cached latents: encode a dataset once with the frozen autoencoder instead of every epoch.

`data.latents: PATH` (ImageDataModule, ClipDataModule) asks for it: when fitting starts, the stage
module hands its autoencoder to the data module, which reuses the cache folder at PATH if it was
made by the same autoencoder weights from the same records at the same size, and otherwise builds
what is missing or stale with a progress bar. PATH holds an index.json and safetensors shards
(keyframe.latents_shards): one per data shard when the data is a folder of tar shards, else 1000
records to a shard; each is written atomically, so a killed build resumes with the same command.
Training items then carry `"latent"` instead of `"image"` / `"video"`: still images with their
mirror image's latents too (for `flip`), clips with every frame's latents, from which windows are
cut at the drawn start and stride. Items are read lazily: a data-loader worker opens a shard when
it first needs one. Stored in fp16 (the latents have unit variance; fp16 keeps about 3 significant
digits). Validation still decodes images, so its numbers are comparable with uncached runs.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator, Sequence
from pathlib import Path

import torch
from einops import rearrange
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from keyframe.errors import UserError
from keyframe.latents_shards import (
    FORMAT,
    ShardReader,
    batches_by_shard,
    ensure_cache,
    per_shard,
    records_fingerprint,
)
from keyframe.resume import item_key

__all__ = ["ensure_cache", "records_fingerprint"]  # re-exported: the cache's entry points


def autoencoder_fingerprint(ae: torch.nn.Module) -> str:
    """A short hash of the autoencoder's weights (and latent scale): which latent space this is."""
    digest = hashlib.sha256()
    for key, value in sorted(ae.state_dict().items()):
        digest.update(key.encode())
        digest.update(value.detach().cpu().float().contiguous().numpy().tobytes())
    return digest.hexdigest()[:16]


def _reader_workers() -> int:
    """Processes that read and decode files while the autoencoder encodes (one core for it)."""
    return max(0, min(8, (os.cpu_count() or 1) - 1))


@torch.no_grad()
def encode_images(
    ae, dataset: Dataset, groups: list[list[int]], flip: bool, batch_size: int, device
) -> Iterator[dict]:
    """Per group of record numbers, the latents of its images in an unflipped
    ImageCaptionDataset and of their mirror images: {"latents", "mirrored"}, a group at a time."""
    batches, owners = batches_by_shard(groups, batch_size)
    loader = DataLoader(dataset, batch_sampler=batches, num_workers=_reader_workers())

    def outputs() -> Iterator[dict]:
        for batch in tqdm(loader, desc="caching latents", unit="batch"):
            images = batch["image"].to(device)
            out = {"latents": ae.encode(images).half().cpu()}
            if flip:
                out["mirrored"] = ae.encode(images.flip(-1)).half().cpu()
            yield out

    yield from per_shard(outputs() if batches else iter(()), owners)


class _DecodedClips(Dataset):
    """Every frame of each clip as (f, c, h, w) in [-1, 1], decoded in loader workers."""

    def __init__(self, records: Sequence[dict], size: int, mode: str):
        self.records, self.size, self.mode = records, size, mode

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, index: int) -> torch.Tensor:
        from keyframe.frames import read_video, resize_frames, to_tensor
        from keyframe.shards import media

        video = read_video(media(self.records[index]))
        return rearrange(
            to_tensor(resize_frames(video, self.size, self.mode)), "c f h w -> f c h w"
        )


@torch.no_grad()
def encode_clips(
    ae, records: Sequence[dict], groups: list[list[int]], size: int, mode: str, device
) -> Iterator[dict]:
    """Per group of record numbers, the latents (f, c, h, w) of every frame of its clips:
    {"clip0": ..., "clip1": ...} numbered within the group, one group at a time."""
    order = [n for group in groups for n in group]
    clips = DataLoader(
        _DecodedClips(records, size, mode),
        batch_size=None,
        sampler=order,
        num_workers=_reader_workers() if order else 0,
    )
    frames = iter(tqdm(clips, desc="caching latents", unit="clip", total=len(order)))
    for group in groups:
        yield {
            f"clip{row}": ae.encode(next(frames).to(device)).half().cpu().contiguous()
            for row in range(len(group))
        }


class CachedImageDataset(Dataset):
    """{"latent": c h w, "caption"} from a still-image cache; `flip` takes the mirror image's
    latents (and swaps left/right in the caption) for half the draws. An image's caption may be
    a list of phrasings: one is drawn per item."""

    def __init__(
        self,
        path: str | Path,
        captions: Sequence[str | Sequence[str]],
        flip: bool,
        seed: int | None,
    ):
        self.cache = ShardReader(path, len(captions))
        if flip and self.cache.identity.get("flip") != "True":
            raise UserError(f"data.latents: {path} has no mirrored latents (made without flip)")
        self.captions = [[c] if isinstance(c, str) else list(c) for c in captions]
        self.flip, self.seed = flip, seed

    def __len__(self) -> int:
        return len(self.captions)

    def __getitem__(self, key: int | tuple[int, int]) -> dict:
        from keyframe.datasets import _Draws, mirror_caption

        index, seed = item_key(key, self.seed)
        draws = _Draws(seed, index)
        file, row = self.cache.locate(index)
        name, caption = "latents", draws.choice(self.captions[index])
        if self.flip and draws.coin():
            name, caption = "mirrored", mirror_caption(caption)
        return {"latent": file.get_slice(name)[row].float(), "caption": caption}


class CachedClipDataset(Dataset):
    """{"latent": c f h w, "caption", "fps", "stride"}: windows cut from cached clip latents, with
    the same draws of start and stride as ClipDataset."""

    def __init__(self, path: str | Path, clips: Dataset):
        self.path, self.clips = str(path), clips
        self.cache = ShardReader(path, len(clips))

    def __len__(self) -> int:
        return len(self.clips)

    def __getitem__(self, key: int | tuple[int, int]) -> dict:
        index, seed = item_key(key, None)
        start, stride = self.clips.window(index, seed)
        n, record = self.clips.num_frames, self.clips.records[index]
        file, row = self.cache.locate(index)
        stored = file.get_slice(f"clip{row}")
        if stored.get_shape()[0] != record["frames"]:
            raise UserError(f"data.latents: {self.path}: clip {index} does not match its record")
        window = stored[start : start + (n - 1) * stride + 1][::stride]
        return {
            "latent": rearrange(window.float(), "f c h w -> c f h w"),
            "caption": record["caption"],
            "fps": float(record["fps"]) / stride,
            "stride": stride,
        }


def cache_identity(ae, records: Sequence[dict], **settings) -> dict[str, str]:
    """What a cache must be made from to be reused: format, autoencoder, records, settings."""
    return {
        "format": FORMAT,
        "autoencoder": autoencoder_fingerprint(ae),
        "records": records_fingerprint(records),
        **{k: str(v) for k, v in settings.items()},
    }


def prepare(module, datamodule) -> None:
    """Called by a stage module when fitting starts: give the data module the autoencoder so it
    can switch its training set to cached latents (rank 0 builds the cache, the others wait)."""
    if datamodule is None or not getattr(datamodule, "latents", None):
        return
    trainer = module.trainer
    datamodule.use_latents(module.autoencoder, trainer.is_global_zero, trainer.strategy.barrier)


def latent_batch(batch: dict, ae, key: str) -> torch.Tensor:
    """A batch's latents: cached ones as they are, else `batch[key]` encoded now."""
    if "latent" in batch:
        return batch["latent"]
    with torch.no_grad():
        return ae.encode(batch[key])
