"""Training datasets: captioned images (or one frame of a clip) and windows of captioned clips,
as tensors in [-1, 1], with seeded or fresh random draws (frame, window, caption, mirroring)."""

from __future__ import annotations

import re
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from keyframe.errors import UserError
from keyframe.frames import read_image, read_video, resize_frames, to_tensor
from keyframe.records import clip_records, image_records, with_video_info
from keyframe.resume import item_key, robust_item
from keyframe.shards import media

_LEFT_RIGHT = re.compile(r"\b(left|right)\b", re.IGNORECASE)


def mirror_caption(caption: str) -> str:
    """Swap the words left and right, so a caption stays true for a mirrored picture."""

    def swap(match: re.Match) -> str:
        word = match.group(0)
        new = "right" if word.lower() == "left" else "left"
        return new.capitalize() if word[0].isupper() else new

    return _LEFT_RIGHT.sub(swap, caption)


def caption_choices(record: dict) -> list[str]:
    """The captions a record may be trained with: its `captions` (other phrasings of the same
    picture, one drawn per step), else its one `caption`."""
    return record.get("captions") or [record["caption"]]


# ---------------------------------------------------------------- datasets


class _Draws:
    """Random draws for item i: fixed per (seed, i) when seeded, else torch's (per worker) RNG."""

    def __init__(self, seed: int | None, index: int):
        self.rng = None if seed is None else np.random.default_rng([seed, index])

    def integer(self, high: int) -> int:
        if self.rng is not None:
            return int(self.rng.integers(high))
        return int(torch.randint(high, ()).item())

    def coin(self) -> bool:
        return self.integer(2) == 1

    def choice(self, options: Sequence[str]) -> str:
        return options[self.integer(len(options))] if len(options) > 1 else options[0]


class ImageCaptionDataset(Dataset):
    """{"image": c h w in [-1, 1], "caption": str}; a video source gives one random frame per clip.

    A record with several `captions` gives one of them, drawn like the rest. flip mirrors half
    the images and swaps left/right in their captions. seed fixes every draw per index
    (validation); None draws afresh each time from torch's RNG (training).
    """

    def __init__(
        self,
        source: str | Path | Sequence[dict],
        size: int,
        flip: bool = False,
        mode: str = "crop",
        seed: int | None = None,
    ):
        self.records = [
            with_video_info(r) if r["kind"] == "video" else r for r in image_records(source)
        ]
        if not self.records:
            raise UserError(f"{source}: no images or videos")
        self.size, self.flip, self.mode, self.seed = size, flip, mode, seed

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, key: int | tuple[int, int]) -> dict:
        index, seed = item_key(key, self.seed)
        return robust_item(lambda i: self._item(i, seed), index, self.records)

    def _item(self, index: int, seed: int | None) -> dict:
        record, draws = self.records[index], _Draws(seed, index)
        if record["kind"] == "image":
            image = read_image(media(record))
        else:
            start = draws.integer(max(record["frames"], 1))
            image = read_video(media(record), start=start, count=1)[0]
        image = resize_frames(image, self.size, self.mode)
        caption = draws.choice(caption_choices(record))
        if self.flip and draws.coin():
            image, caption = image[:, ::-1], mirror_caption(caption)
        return {"image": to_tensor(image), "caption": caption}


class ClipDataset(Dataset):
    """{"video": c f h w in [-1, 1], "caption", "fps": fps / stride, "stride"} windows of clips.

    Each item takes num_frames frames at a stride drawn from those the clip is long enough for;
    clips too short for the smallest stride are left out (with a warning).
    """

    def __init__(
        self,
        source: str | Path | Sequence[dict],
        num_frames: int,
        size: int,
        strides: Sequence[int] = (1,),
        random_start: bool = True,
        seed: int | None = None,
        mode: str = "crop",
    ):
        if num_frames < 1 or not strides or min(strides) < 1:
            raise ValueError("ClipDataset needs num_frames >= 1 and strides >= 1")
        records = [with_video_info(r) for r in clip_records(source)]
        span = (num_frames - 1) * min(strides) + 1
        self.records = [r for r in records if r["frames"] >= span]
        if len(self.records) < len(records):
            warnings.warn(
                f"{len(records) - len(self.records)} of {len(records)} clips are shorter than "
                f"{span} frames and are left out",
                stacklevel=2,
            )
        if not self.records:
            raise UserError(f"{source}: no clip has the {span} frames needed")
        self.num_frames, self.size, self.mode = num_frames, size, mode
        self.strides, self.random_start, self.seed = tuple(strides), random_start, seed

    def __len__(self) -> int:
        return len(self.records)

    def window(self, index: int, seed: int | None = None) -> tuple[int, int]:
        """The (start, stride) of item `index`: fixed by `seed` (default: the dataset's), drawn
        afresh without one."""
        seed = self.seed if seed is None else seed
        frames, draws = self.records[index]["frames"], _Draws(seed, index)
        fits = [s for s in self.strides if (self.num_frames - 1) * s + 1 <= frames]
        stride = fits[draws.integer(len(fits))]
        last_start = frames - ((self.num_frames - 1) * stride + 1)
        start = draws.integer(last_start + 1) if self.random_start else 0
        return start, stride

    def __getitem__(self, key: int | tuple[int, int]) -> dict:
        index, seed = item_key(key, self.seed)
        return robust_item(lambda i: self._item(i, seed), index, self.records)

    def _item(self, index: int, seed: int | None) -> dict:
        record = self.records[index]
        frames = record["frames"]
        start, stride = self.window(index, seed)
        video = read_video(media(record), start=start, count=self.num_frames, stride=stride)
        if len(video) < self.num_frames:
            raise UserError(
                f"{record['path']}: decoded {start + (len(video) - 1) * stride + 1} frames, "
                f"the manifest says {frames}"
            )
        return {
            "video": to_tensor(resize_frames(video, self.size, self.mode)),
            "caption": record["caption"],
            "fps": float(record["fps"]) / stride,
            "stride": stride,
        }
