"""Video files, read with PyAV: the one video reader of training (keyframe.frames, the general
interpolator's data), inference (pipeline.io_video) and eval (pipeline.eval_video), so all see
the same pixels. Frame counts come from the container; windows are decoded by seeking to the
keyframe before them (not from frame 0), and the frames that come back are counted, so a
truncated file shows up as too few frames rather than as a header's promise.
"""

from __future__ import annotations

import io
import math
from fractions import Fraction
from pathlib import Path

import numpy as np

from keyframe.errors import UserError


def _one_line(err: BaseException) -> str:
    return " ".join(str(err).split())[:200] or type(err).__name__


def _stream_rate(stream) -> Fraction | None:
    rate = stream.average_rate or stream.guessed_rate or stream.base_rate
    return Fraction(rate) if rate else None


def video_file_info(path: str | Path) -> tuple[int, float | None]:
    """(frame count, fps) of a video file from its container (no decoding): the stream's frame
    count, else its duration times its rate. UserError if it does not open."""
    import av

    try:
        with av.open(str(path)) as container:
            if not container.streams.video:
                raise UserError(f"{path}: has no video stream")
            stream = container.streams.video[0]
            rate = _stream_rate(stream)
            frames = stream.frames
            if not frames and stream.duration and stream.time_base and rate:
                frames = int(stream.duration * stream.time_base * rate + Fraction(1, 2))
            if not frames and container.duration and rate:
                frames = int(container.duration / 1_000_000 * rate + 0.5)
    except (av.FFmpegError, OSError, ValueError) as err:
        raise UserError(f"{path}: not a readable video ({_one_line(err)})") from None
    return int(frames or 0), (float(rate) if rate else None)


def _frame_index(frame, stream, rate: Fraction, start_time: int) -> int | None:
    """A decoded frame's index from its timestamp (constant frame rate), None without one."""
    pts = frame.pts if frame.pts is not None else frame.dts
    if pts is None or not stream.time_base:
        return None
    return int(math.floor((pts - start_time) * stream.time_base * rate + Fraction(1, 2)))


def read_video_file(
    path: str | Path | io.BytesIO, start: int = 0, count: int | None = None, stride: int = 1
) -> np.ndarray:
    """Frames start, start + stride, ... (count of them, or to the end) of a video file as uint8
    RGB (f, h, w, 3): seeks to the keyframe at or before `start`, then decodes forward, placing
    each frame by its timestamp. Returns fewer frames if the file ends (or is cut) first."""
    import av

    limit = math.inf if count is None else count
    frames: list[np.ndarray] = []
    try:
        with av.open(path if isinstance(path, io.BytesIO) else str(path)) as container:
            if not container.streams.video:
                raise UserError(f"{path}: has no video stream")
            stream = container.streams.video[0]
            stream.thread_type = "AUTO"
            rate = _stream_rate(stream)
            start_time = stream.start_time or 0
            timed = rate is not None and stream.time_base is not None
            if start > 0 and timed:
                target = start_time + int(start / rate / stream.time_base)
                container.seek(target, stream=stream, backward=True, any_frame=False)
            counter = 0
            for frame in container.decode(stream):
                index = _frame_index(frame, stream, rate, start_time) if timed else None
                if index is None:  # no timestamps: count frames from the first (no seek made)
                    index = counter
                counter += 1
                if index < start or (index - start) % stride:
                    continue
                frames.append(frame.to_ndarray(format="rgb24"))
                if len(frames) >= limit:
                    break
    except (av.FFmpegError, OSError, ValueError) as err:
        if not frames:
            raise UserError(f"{path}: not a readable video ({_one_line(err)})") from None
        # a file cut mid-frame: keep what decoded; the caller counts the frames
    if not frames:
        raise UserError(f"{path}: no frames from frame {start}")
    return np.stack(frames)
