"""Cached latents: encode a dataset once with the frozen autoencoder instead of every epoch.

`data.latents: PATH` (ImageDataModule, ClipDataModule) asks for it: when fitting starts, the stage
module hands its autoencoder to the data module, which reuses the safetensors file at PATH if it
was made by the same autoencoder weights from the same records at the same size, and otherwise
(re)builds it with a progress bar, atomically. Training items then carry `"latent"` instead of
`"image"` / `"video"`: still images with their mirror image's latents too (for `flip`), clips with
every frame's latents, from which windows are cut at the drawn start and stride. Stored in fp16
(the latents have unit variance; fp16 keeps about 3 significant digits). Validation still decodes
images, so its numbers are comparable with uncached runs.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Sequence
from pathlib import Path

import torch
from einops import rearrange
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from keyframe.errors import UserError
from keyframe.files import atomic_write
from keyframe.resume import item_key

FORMAT = "animatic-latents-1"


def autoencoder_fingerprint(ae: torch.nn.Module) -> str:
    """A short hash of the autoencoder's weights (and latent scale): which latent space this is."""
    digest = hashlib.sha256()
    for key, value in sorted(ae.state_dict().items()):
        digest.update(key.encode())
        digest.update(value.detach().cpu().float().contiguous().numpy().tobytes())
    return digest.hexdigest()[:16]


def _where(record: dict) -> str:
    """A record's file, and its member for a sample inside a shard."""
    path = str(record["path"])
    return f"{path}:{record['member']}" if "member" in record else path


def records_fingerprint(records: Sequence[dict]) -> str:
    """A short hash of the records' paths, captions and frame counts."""
    keys = [(_where(r), r.get("caption", ""), r.get("frames")) for r in records]
    return hashlib.sha256(json.dumps(keys).encode()).hexdigest()[:16]


def _read_metadata(path: Path) -> dict | None:
    from safetensors import safe_open

    try:
        with safe_open(str(path), "pt") as f:
            return f.metadata() or {}
    except Exception:
        return None


def ensure_cache(path: str | Path, identity: dict[str, str], build, verbose: bool = True) -> Path:
    """The cache at `path` if its metadata equals `identity`, else `build()`'s tensors written
    there (atomically) with that metadata. A file that is not a cache is never replaced."""
    path = Path(path)
    if path.exists():
        found = _read_metadata(path)
        if found is None or found.get("format") != FORMAT:
            raise UserError(
                f"data.latents: {path} exists and is not a latent cache; pick a new path"
            )
        if found == identity:
            return path
        if verbose:
            changed = sorted(k for k in identity if found.get(k) != identity[k])
            print(f"data.latents: {path} is stale ({', '.join(changed)} changed); rebuilding")
    from safetensors.torch import save_file

    tensors = build()
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, lambda tmp: save_file(tensors, str(tmp), metadata=identity))
    return path


def _reader_workers() -> int:
    """Processes that read and decode files while the autoencoder encodes (one core for it)."""
    return max(0, min(8, (os.cpu_count() or 1) - 1))


@torch.no_grad()
def encode_images(ae, dataset: Dataset, flip: bool, batch_size: int, device) -> dict:
    """Latents of every image of an unflipped ImageCaptionDataset (and of its mirror images)."""
    out: dict[str, list[torch.Tensor]] = {"latents": [], "mirrored": []}
    batches = DataLoader(dataset, batch_size=batch_size, num_workers=_reader_workers())
    for batch in tqdm(batches, desc="caching latents", unit="batch"):
        images = batch["image"].to(device)
        out["latents"].append(ae.encode(images).half().cpu())
        if flip:
            out["mirrored"].append(ae.encode(images.flip(-1)).half().cpu())
    return {k: torch.cat(v).contiguous() for k, v in out.items() if v}


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
def encode_clips(ae, records: Sequence[dict], size: int, mode: str, device) -> dict:
    """Latents (f, c, h, w) of every frame of every clip, one tensor per clip."""
    clips = DataLoader(
        _DecodedClips(records, size, mode), batch_size=None, num_workers=_reader_workers()
    )
    out = {}
    for i, frames in enumerate(tqdm(clips, desc="caching latents", unit="clip")):
        out[f"clip{i}"] = ae.encode(frames.to(device)).half().cpu().contiguous()
    return out


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
        from safetensors.torch import load_file

        tensors = load_file(str(path))
        self.latents, self.mirrored = tensors["latents"], tensors.get("mirrored")
        if len(self.latents) != len(captions):
            raise UserError(
                f"data.latents: {path} holds {len(self.latents)} images, expected {len(captions)}"
            )
        if flip and self.mirrored is None:
            raise UserError(f"data.latents: {path} has no mirrored latents (made without flip)")
        self.captions = [[c] if isinstance(c, str) else list(c) for c in captions]
        self.flip, self.seed = flip, seed

    def __len__(self) -> int:
        return len(self.captions)

    def __getitem__(self, key: int | tuple[int, int]) -> dict:
        from keyframe.datasets import _Draws, mirror_caption

        index, seed = item_key(key, self.seed)
        draws = _Draws(seed, index)
        latent, caption = self.latents[index], draws.choice(self.captions[index])
        if self.flip and draws.coin():
            latent, caption = self.mirrored[index], mirror_caption(caption)
        return {"latent": latent.float(), "caption": caption}


class CachedClipDataset(Dataset):
    """{"latent": c f h w, "caption", "fps", "stride"}: windows cut from cached clip latents, with
    the same draws of start and stride as ClipDataset."""

    def __init__(self, path: str | Path, clips: Dataset):
        self.path, self.clips = str(path), clips
        self._file = None

    def __len__(self) -> int:
        return len(self.clips)

    def __getitem__(self, key: int | tuple[int, int]) -> dict:
        from safetensors import safe_open

        if self._file is None:  # opened lazily: once per data-loader worker
            self._file = safe_open(self.path, "pt")
        index, seed = item_key(key, None)
        start, stride = self.clips.window(index, seed)
        n, record = self.clips.num_frames, self.clips.records[index]
        stored = self._file.get_slice(f"clip{index}")
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
    """The metadata a cache must carry to be reused: format, autoencoder, records, settings."""
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
