"""Captioned images and videos for both stages: records, frame reading, square resizing, datasets.

A source is any of: a dataset folder written by `animatic dataset` (clips.jsonl / stills.jsonl),
a JSONL or CSV manifest with path and caption columns (paths relative to the manifest), a folder
with a metadata.jsonl / metadata.csv, or a folder of media files each with a `name.txt` caption.
Tensors come out as images `c h w` and videos `c f h w`, float in [-1, 1].
"""

from __future__ import annotations

import csv
import json
import math
import os
import re
import warnings
from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np
import torch
from einops import rearrange
from lightning import LightningDataModule
from torch.utils.data import DataLoader, Dataset

from keyframe.errors import UserError
from keyframe.media import read_video_file, video_file_info
from keyframe.resume import EpochSampler, ResumableLoader, item_key, robust_item

IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff"})
VIDEO_SUFFIXES = frozenset({".mp4", ".avi", ".mov", ".mkv", ".webm", ".gif", ".m4v"})
MANIFESTS = ("clips.jsonl", "stills.jsonl")  # written by `animatic dataset`
METADATA = ("metadata.jsonl", "metadata.csv")  # the Hugging Face imagefolder convention
PATH_KEYS = ("path", "file_name")
CAPTION_KEYS = ("caption", "text")
DEFAULT_FPS = 24.0  # for frame folders, which carry no frame rate


# ---------------------------------------------------------------- records


def media_kind(path: str | Path) -> str | None:
    """The kind of a path: "image", "video" (a video file or a folder of frames), or None."""
    path = Path(path)
    if path.is_dir():
        return "video"
    suffix = path.suffix.lower()
    return "image" if suffix in IMAGE_SUFFIXES else "video" if suffix in VIDEO_SUFFIXES else None


def _record(fields: dict, base: Path, where: str) -> dict:
    """Check one manifest entry and resolve its path against the manifest's folder."""
    path_key = next((k for k in PATH_KEYS if k in fields), None)
    caption_key = next((k for k in CAPTION_KEYS if k in fields), None)
    if path_key is None or caption_key is None:
        raise UserError(f"{where}: expected a 'path' and a 'caption' field, got {sorted(fields)}")
    if not isinstance(fields[path_key], str) or not isinstance(fields[caption_key], str):
        raise UserError(f"{where}: 'path' and 'caption' must be strings")
    path = (base / fields[path_key]).resolve()
    kind = media_kind(path)
    if not path.exists():
        raise UserError(f"{where}: {fields[path_key]} does not exist")
    if kind is None:
        raise UserError(f"{where}: {fields[path_key]} is not an image or video file")
    record = {k: v for k, v in fields.items() if k not in PATH_KEYS + CAPTION_KEYS}
    record.update(path=str(path), caption=fields[caption_key].strip(), kind=kind)
    if "captions" in record:
        captions = record["captions"]
        if not (
            isinstance(captions, list) and captions and all(isinstance(c, str) for c in captions)
        ):
            raise UserError(f"{where}: 'captions' must be a non-empty list of strings")
        record["captions"] = [c.strip() for c in captions]
    for key, cast in (("fps", float), ("frames", int)):
        value = record.get(key)
        try:
            record[key] = None if value in (None, "") else cast(value)
        except (TypeError, ValueError):
            raise UserError(f"{where}: {key} must be a number, got {value!r}") from None
    return record


def _read_jsonl(path: Path) -> list[dict]:
    records = []
    with path.open(encoding="utf-8") as lines:
        for number, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            where = f"{path}:{number}"
            try:
                fields = json.loads(line)
            except json.JSONDecodeError as err:
                raise UserError(f"{where}: not valid JSON ({err.msg})") from None
            if not isinstance(fields, dict):
                raise UserError(f"{where}: expected a JSON object with path and caption")
            records.append(_record(fields, path.parent, where))
    return records


def _read_csv(path: Path) -> list[dict]:
    with path.open(encoding="utf-8", newline="") as handle:
        reader = csv.DictReader(handle)
        header = [name.strip().lower() for name in reader.fieldnames or []]
        if not set(header) & set(PATH_KEYS) or not set(header) & set(CAPTION_KEYS):
            raise UserError(f"{path}:1: expected a header with 'path' and 'caption' columns")
        reader.fieldnames = header
        records = []
        for row in reader:
            where = f"{path}:{reader.line_num}"
            if None in row or None in row.values():
                raise UserError(f"{where}: expected {len(header)} columns")
            records.append(_record(row, path.parent, where))
    return records


def _read_sidecars(folder: Path) -> list[dict]:
    """Every image/video file in the folder tree, captioned by the text file with the same stem."""
    media = sorted(
        p
        for p in folder.rglob("*")
        if p.is_file()
        and not any(part.startswith(".") for part in p.relative_to(folder).parts)
        and media_kind(p) is not None
    )
    if not media:
        raise UserError(f"{folder}: no images or videos, and no manifest (clips.jsonl, metadata.*)")
    missing = [p for p in media if not p.with_suffix(".txt").is_file()]
    if missing:
        example = missing[0].relative_to(folder)
        raise UserError(
            f"{folder}: {len(missing)} of {len(media)} files have no caption; expected "
            f"{example.with_suffix('.txt')} next to {example} (or a metadata.jsonl)"
        )
    captions = [p.with_suffix(".txt") for p in media]
    return [  # paths relative to `folder`, which _record joins them to
        _record(
            {"path": str(p.relative_to(folder)), "caption": t.read_text("utf-8")}, folder, str(t)
        )
        for p, t in zip(media, captions, strict=True)
    ]


def _read_source(source: Path) -> list[dict]:
    if source.is_file():
        suffix = source.suffix.lower()
        if suffix == ".jsonl":
            return _read_jsonl(source)
        if suffix == ".csv":
            return _read_csv(source)
        raise UserError(f"{source}: expected a folder, a .jsonl or a .csv manifest")
    if not source.is_dir():
        raise UserError(f"{source}: no such file or folder")
    manifests = [source / name for name in MANIFESTS if (source / name).is_file()]
    if not manifests:
        manifests = [source / name for name in METADATA if (source / name).is_file()][:1]
    if manifests:
        return [r for m in manifests for r in _read_source(m)]
    return _read_sidecars(source)


def load_records(source: str | Path, kind: str | None = None) -> list[dict]:
    """Records {path (absolute), caption, kind, fps, frames, ...extra fields} of a source.

    kind "image" or "video" keeps only that kind; a source without any is a UserError.
    """
    if kind not in (None, "image", "video"):
        raise ValueError(f"kind must be 'image', 'video' or None, not {kind!r}")
    records = _read_source(Path(source).expanduser())
    if kind is None:
        return records
    chosen = [r for r in records if r["kind"] == kind]
    if not chosen:
        raise UserError(f"{source}: no {kind}s found ({len(records)} other files)")
    return chosen


# ---------------------------------------------------------------- reading and resizing


def _as_rgb8(image: np.ndarray) -> np.ndarray:
    """Whatever OpenCV decoded (gray, BGR, BGRA, 16-bit) as uint8 RGB; alpha over white."""
    if image.dtype == np.uint16:
        image = (image.astype(np.float32) / 257.0).round().astype(np.uint8)
    if image.ndim == 2:
        return cv2.cvtColor(image, cv2.COLOR_GRAY2RGB)
    if image.shape[2] == 4:
        alpha = image[..., 3:].astype(np.float32) / 255.0
        rgb = image[..., 2::-1].astype(np.float32)
        return (rgb * alpha + 255.0 * (1.0 - alpha)).round().astype(np.uint8)
    return np.ascontiguousarray(image[..., ::-1])


def read_image(path: str | Path) -> np.ndarray:
    """An image file as uint8 RGB (h, w, 3)."""
    try:
        data = np.fromfile(str(path), dtype=np.uint8)
    except OSError as err:
        raise UserError(f"{path}: cannot read ({err.strerror or err})") from None
    image = cv2.imdecode(data, cv2.IMREAD_UNCHANGED) if data.size else None
    if image is None:
        raise UserError(f"{path}: not a readable image")
    return _as_rgb8(image)


def _frame_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)


def video_info(path: str | Path) -> tuple[int, float | None]:
    """(frame count, fps) as the container reports them; a frame folder has no fps."""
    path = Path(path)
    if path.is_dir():
        return len(_frame_files(path)), None
    return video_file_info(path)


def read_video(
    path: str | Path, start: int = 0, count: int | None = None, stride: int = 1
) -> np.ndarray:
    """Frames start, start + stride, ... (count of them, or to the end) as uint8 RGB (f, h, w, 3).

    Video files are decoded from the keyframe before `start` (keyframe.media), frame folders
    read file by file. Returns fewer than count frames if the video ends first.
    """
    if start < 0 or stride < 1 or (count is not None and count < 1):
        raise ValueError("read_video needs start >= 0, stride >= 1, count >= 1")
    path = Path(path)
    frames: list[np.ndarray] = []
    if path.is_dir():
        files = _frame_files(path)[start::stride]
        frames = [read_image(f) for f in files[: None if count is None else count]]
    else:
        return read_video_file(path, start, count, stride)
    if not frames:
        raise UserError(f"{path}: no frames from frame {start}")
    return np.stack(frames)


def resize_frames(frames: np.ndarray, size: int, mode: str = "crop") -> np.ndarray:
    """uint8 (h, w, 3) or (f, h, w, 3) to size x size: "crop" takes the centre square,
    "letterbox" fits the whole frame and pads with black."""
    if mode not in ("crop", "letterbox"):
        raise ValueError(f"mode must be 'crop' or 'letterbox', not {mode!r}")
    video = frames if frames.ndim == 4 else frames[None]
    h, w = video.shape[1:3]
    if (h, w) == (size, size):
        return frames
    if mode == "crop":
        side = min(h, w)
        top, left = (h - side) // 2, (w - side) // 2
        video = video[:, top : top + side, left : left + side]
        new_h = new_w = size
    else:
        scale = size / max(h, w)
        new_h, new_w = max(1, round(h * scale)), max(1, round(w * scale))
    shrink = new_h * new_w < video.shape[1] * video.shape[2]
    interpolation = cv2.INTER_AREA if shrink else cv2.INTER_CUBIC
    resized = np.stack([cv2.resize(f, (new_w, new_h), interpolation=interpolation) for f in video])
    if mode == "letterbox":
        out = np.zeros((len(video), size, size, 3), dtype=np.uint8)
        top, left = (size - new_h) // 2, (size - new_w) // 2
        out[:, top : top + new_h, left : left + new_w] = resized
        resized = out
    return resized if frames.ndim == 4 else resized[0]


def to_tensor(frames: np.ndarray) -> torch.Tensor:
    """uint8 (h, w, 3) -> c h w, or (f, h, w, 3) -> c f h w; float32 in [-1, 1]."""
    tensor = torch.from_numpy(np.ascontiguousarray(frames)).float() / 127.5 - 1.0
    if tensor.ndim == 3:
        return rearrange(tensor, "h w c -> c h w")
    return rearrange(tensor, "f h w c -> c f h w")


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


def _given_records(source: str | Path | Sequence[dict]) -> list[dict] | None:
    """A list of records passed in directly (e.g. one side of a split), else None."""
    return None if isinstance(source, (str, Path)) else list(source)


def image_records(source: str | Path | Sequence[dict]) -> list[dict]:
    """The images of a source, or its videos (to sample frames from) when it has no images."""
    records = _given_records(source)
    records = load_records(source) if records is None else records
    images = [r for r in records if r["kind"] == "image"]
    return images or [r for r in records if r["kind"] == "video"]


def clip_records(source: str | Path | Sequence[dict]) -> list[dict]:
    records = _given_records(source)
    if records is None:
        return load_records(source, "video")
    return [r for r in records if r["kind"] == "video"]


def _with_video_info(record: dict) -> dict:
    """Fill in frames and fps from the file when the manifest did not give them."""
    if record.get("frames") is None or record.get("fps") is None:
        frames, fps = video_info(record["path"])
        record = {**record, "frames": record.get("frames") or frames}
        record["fps"] = record.get("fps") or fps or DEFAULT_FPS
    return record


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
            _with_video_info(r) if r["kind"] == "video" else r for r in image_records(source)
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
            image = read_image(record["path"])
        else:
            start = draws.integer(max(record["frames"], 1))
            image = read_video(record["path"], start=start, count=1)[0]
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
        records = [_with_video_info(r) for r in clip_records(source)]
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
        video = read_video(record["path"], start=start, count=self.num_frames, stride=stride)
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


# ---------------------------------------------------------------- Lightning data modules


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
                self.latents, identity,
                lambda: cache.encode_images(ae, images, self.flip, self.batch_size, device),
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
                self.latents, identity,
                lambda: cache.encode_clips(ae, clips.records, self.size, self.mode, device),
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
