"""Pictures from files: which paths are images or videos, decoding them (images, video files,
frame folders) to uint8 RGB, square resizing (crop or letterbox), and float tensors in [-1, 1]."""

from __future__ import annotations

import io
from pathlib import Path

import cv2
import numpy as np
import torch
from einops import rearrange

from keyframe.errors import UserError
from keyframe.image_decode import IMAGE_SUFFIXES, decode_image, image_files
from keyframe.media import read_video_file, video_file_info

VIDEO_SUFFIXES = frozenset({".mp4", ".avi", ".mov", ".mkv", ".webm", ".gif", ".m4v"})


def media_kind(path: str | Path) -> str | None:
    """The kind of a path: "image", "video" (a video file or a folder of frames), or None."""
    path = Path(path)
    if path.is_dir():
        return "video"
    suffix = path.suffix.lower()
    return "image" if suffix in IMAGE_SUFFIXES else "video" if suffix in VIDEO_SUFFIXES else None


def read_image(path: str | Path | io.BytesIO) -> np.ndarray:
    """An image file (or its bytes, e.g. a member of a shard) as uint8 RGB (h, w, 3)."""
    try:
        if isinstance(path, io.BytesIO):
            data = np.frombuffer(path.getbuffer(), dtype=np.uint8)
        else:
            data = np.fromfile(str(path), dtype=np.uint8)
    except OSError as err:
        raise UserError(f"{path}: cannot read ({err.strerror or err})") from None
    return decode_image(data, path)


def video_info(path: str | Path) -> tuple[int, float | None]:
    """(frame count, fps) as the container reports them; a frame folder has no fps."""
    path = Path(path)
    if path.is_dir():
        return len(image_files(path)), None
    return video_file_info(path)


def read_video(
    path: str | Path | io.BytesIO, start: int = 0, count: int | None = None, stride: int = 1
) -> np.ndarray:
    """Frames start, start + stride, ... (count of them, or to the end) as uint8 RGB (f, h, w, 3).

    Video files are decoded from the keyframe before `start` (keyframe.media), frame folders
    read file by file. Returns fewer than count frames if the video ends first.
    """
    if start < 0 or stride < 1 or (count is not None and count < 1):
        raise ValueError("read_video needs start >= 0, stride >= 1, count >= 1")
    if isinstance(path, io.BytesIO):  # a video file's bytes (a member of a shard)
        return read_video_file(path, start, count, stride)
    path = Path(path)
    frames: list[np.ndarray] = []
    if path.is_dir():
        files = image_files(path)[start::stride]
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
