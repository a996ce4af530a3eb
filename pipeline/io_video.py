"""Video files: H.264 MP4, GIF and ProRes out (``write_video`` picks by suffix), any video in.

Split from pipeline.io (stills, PNG sequences, sidecars), whose conventions hold here too:
frames are ``uint8 (h, w, 3)`` RGB, writers are atomic and refuse an existing file unless
``overwrite=True``. MP4 settings are fixed so that the same frames give the same bytes.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterable
from fractions import Fraction
from pathlib import Path

import numpy as np

from keyframe.errors import UserError
from keyframe.files import atomic_path
from pipeline.io import check_frame, refuse_existing, write_png_sequence

MP4_CRF = 18  # visually lossless for x264; 23 is x264's default, lower is larger and better
MP4_PRESET = "medium"
# x264's output depends on its thread count, which it otherwise takes from the CPUs it may use
# (and a loaded model may change that): a fixed count, and muxing without version strings, make
# the same frames the same bytes on any machine.
MP4_THREADS = 2
GIF_MIN_DELAY_CS = 2  # browsers show delays below 2/100 s as 10/100 s


def _fps_fraction(fps: float) -> Fraction:
    if not (isinstance(fps, (int, float, Fraction)) and math.isfinite(fps) and fps > 0):
        raise ValueError(f"fps must be a positive number, got {fps!r}")
    return Fraction(fps).limit_denominator(1001)


def write_mp4(
    path: str | os.PathLike,
    frames: Iterable[np.ndarray],
    fps: float,
    crf: int = MP4_CRF,
    overwrite: bool = False,
) -> Path:
    """Encode frames (streamed, any iterable) as a browser-playable H.264 MP4, atomically.

    H.264 (libx264), yuv420p, BT.709 matrix in limited range and tagged as such, ``+faststart``
    (the index goes first, so browsers play while downloading). yuv420p needs even sizes: an odd
    width or height is padded by one pixel, repeating the last column/row (no pixel is lost).
    """
    import av

    path = Path(path)
    rate = _fps_fraction(fps)
    refuse_existing(path, overwrite)
    options = {"movflags": "+faststart", "fflags": "+bitexact"}
    with atomic_path(path) as tmp, av.open(str(tmp), "w", format="mp4", options=options) as out:
        stream = None
        for index, frame in enumerate(frames):
            check_frame(frame)
            if stream is None:
                size = frame.shape[:2]
                stream = _add_h264_stream(out, rate, size, crf)
            elif frame.shape[:2] != size:
                raise ValueError(f"frame {index} is {frame.shape[:2]}, frame 0 was {size}")
            out.mux(stream.encode(_yuv_frame(frame, index)))
        if stream is None:
            raise ValueError(f"{path}: no frames to write")
        out.mux(stream.encode(None))
    return path


def _add_h264_stream(out, rate: Fraction, size: tuple[int, int], crf: int):
    """An x264 stream for frames of ``size`` (rounded up to even), tagged BT.709 limited range."""
    from av.video.reformatter import ColorPrimaries, ColorRange, Colorspace, ColorTrc

    stream = out.add_stream("libx264", rate=rate)
    stream.height, stream.width = (s + s % 2 for s in size)
    stream.pix_fmt = "yuv420p"
    stream.options = {"crf": str(crf), "preset": MP4_PRESET, "threads": str(MP4_THREADS)}
    codec = stream.codec_context
    codec.colorspace = Colorspace.ITU709
    codec.color_range = ColorRange.MPEG
    codec.color_primaries = ColorPrimaries.BT709
    codec.color_trc = ColorTrc.BT709
    return stream


def _yuv_frame(rgb: np.ndarray, pts: int):
    """RGB frame -> BT.709 limited-range yuv420p VideoFrame, odd edges padded by repetition."""
    import av

    pad = ((0, rgb.shape[0] % 2), (0, rgb.shape[1] % 2), (0, 0))
    frame = av.VideoFrame.from_ndarray(np.pad(rgb, pad, mode="edge"), format="rgb24")
    return bt709_limited(frame, "yuv420p", pts)


def bt709_limited(frame, pix_fmt: str, pts: int):
    """A full-range RGB VideoFrame -> `pix_fmt` in BT.709 limited range (how players read
    untagged or BT.709-tagged video), with its presentation time `pts`."""
    from av.video.reformatter import ColorRange, Colorspace

    frame = frame.reformat(
        format=pix_fmt,
        src_colorspace=Colorspace.ITU709,
        dst_colorspace=Colorspace.ITU709,
        src_color_range=ColorRange.JPEG,
        dst_color_range=ColorRange.MPEG,
    )
    frame.pts = pts
    return frame


def gif_delays_cs(num_frames: int, fps: float) -> list[int]:
    """Per-frame GIF delays in 1/100 s whose running sum tracks the true time.

    GIF stores delays in whole centiseconds, so 24 fps (4.17 cs) cannot be stored exactly:
    delays alternate (4, 4, 5, 4, 4, 4, ...) and the whole clip lasts the right time. Delays are
    at least 2 cs, because browsers play shorter ones at 10 cs; above 50 fps a GIF runs slow.
    """
    rate = _fps_fraction(fps)
    stamps = [math.floor(i * 100 / rate + Fraction(1, 2)) for i in range(num_frames + 1)]
    return [max(GIF_MIN_DELAY_CS, b - a) for a, b in zip(stamps, stamps[1:], strict=False)]


def write_gif(
    path: str | os.PathLike, frames: Iterable[np.ndarray], fps: float, overwrite: bool = False
) -> Path:
    """Write an endlessly looping GIF with Pillow (adaptive 256-colour palette per frame).

    GIFs are previews: all frames are held in memory. Pillow merges identical consecutive
    frames into one longer frame, so held shots stay small and keep their duration.
    """
    from PIL import Image

    path = Path(path)
    _fps_fraction(fps)
    refuse_existing(path, overwrite)
    images = []
    for frame in frames:
        check_frame(frame)
        if images and frame.shape[:2] != (images[0].height, images[0].width):
            raise ValueError(f"frame {len(images)} is {frame.shape[:2]}, frame 0 differs")
        images.append(Image.fromarray(frame, mode="RGB"))
    if not images:
        raise ValueError(f"{path}: no frames to write")
    delays_ms = [10 * cs for cs in gif_delays_cs(len(images), fps)]
    with atomic_path(path) as tmp:
        images[0].save(
            tmp,
            format="GIF",
            save_all=True,
            append_images=images[1:],
            duration=delays_ms,
            loop=0,
        )
    return path


def write_video(
    path: str | os.PathLike, frames: Iterable[np.ndarray], fps: float, overwrite: bool = False
) -> list[Path]:
    """Write frames by the target's form: ``.mp4``, ``.gif``, ``.mov`` (ProRes 422 HQ), or a
    folder (no suffix) of PNGs.

    Returns the files written. MP4 and PNG sequences stream; GIF holds all frames.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix == ".mp4":
        return [write_mp4(path, frames, fps, overwrite=overwrite)]
    if suffix == ".gif":
        return [write_gif(path, frames, fps, overwrite=overwrite)]
    if suffix == ".mov":
        from pipeline import media

        rgb = (media.from_rgb8(frame) for frame in frames)
        return [media.write_prores(path, rgb, fps, "422hq", overwrite=overwrite)]
    if suffix == "" or path.is_dir():
        _fps_fraction(fps)
        return write_png_sequence(path, frames, overwrite=overwrite)
    raise UserError(
        f"{path}: unsupported output format '{path.suffix}'; "
        "expected .mp4, .gif, .mov, or a folder name for a PNG sequence"
    )


def read_video_frames(path: str | os.PathLike) -> tuple[np.ndarray, float]:
    """Decode a video (MP4, GIF, anything FFmpeg reads) -> ``(uint8 (f, h, w, 3), fps)``, with
    the reader training and eval use too (keyframe.media), so all see the same pixels."""
    from keyframe.media import read_video_file, video_file_info

    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: video not found")
    fps = video_file_info(path)[1]
    return read_video_file(path), fps or 0.0
