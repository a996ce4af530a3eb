"""Keys and frames at their own depth and channels: PNG (8/16-bit, alpha), OpenEXR, ProRes.

The frames contract (what `animatic tween` passes between reading, in-betweening and writing):

- a frame is a ``float32 (h, w, C)`` array, C = 3 (RGB) or 4 (RGBA);
- colour is premultiplied by alpha (EXR's convention; PNG's straight alpha is converted on read
  and write), so that warping, blending and resizing never spread colour from transparent pixels;
- values are in [0, 1] for 8/16-bit sources and as stored for EXR (linear light, may exceed 1);
- a ``Depth`` ("8-bit", "16-bit", "half", "float") records the source's depth, so the output is
  written at the keys' depth; key files themselves are copied byte for byte where they can be.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterable, Sequence
from fractions import Fraction
from pathlib import Path

import cv2
import numpy as np

from keyframe.errors import UserError
from keyframe.files import atomic_path
from keyframe.image_decode import imdecode
from pipeline import safety

DEPTHS = ("8-bit", "16-bit", "half", "float")
_SCALE = {np.dtype(np.uint8): ("8-bit", 255.0), np.dtype(np.uint16): ("16-bit", 65535.0)}
PRORES_PROFILES = {"422hq": ("yuv422p10le", "3"), "4444": ("yuva444p10le", "4")}


# ---------------------------------------------------------------------------------------------
# Reading


def read_frame(path: str | os.PathLike) -> tuple[np.ndarray, str]:
    """Read a still at its own depth -> (premultiplied float32 (h, w, 3|4), depth).

    EXR through OpenEXR (R, G, B and optional A channels, half or float); everything else
    through OpenCV (8/16-bit, with alpha; float TIFFs read as "float"). Gray repeats to RGB.
    """
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: image not found" if not path.exists() else f"{path}: not a file")
    if path.suffix.lower() == ".exr":
        return _read_exr(path)
    safety.check_image_file(path)  # before decoding: a 12000x9000 key would need 324 MB
    try:
        data = np.fromfile(path, dtype=np.uint8)
    except OSError as err:
        raise UserError(f"{path}: cannot read image ({err.strerror})") from None
    image = imdecode(data, path)  # the decoder of keyframe.image_decode, at full depth
    if image.dtype in _SCALE:
        depth, full = _SCALE[image.dtype]
    elif image.dtype in (np.float16, np.float32):
        depth, full = ("half" if image.dtype == np.float16 else "float"), 1.0
    else:
        raise UserError(f"{path}: unsupported pixel type {image.dtype} (expected 8/16-bit/float)")
    pixels = image.astype(np.float32) / np.float32(full)
    alpha = pixels[:, :, -1:] if pixels.shape[2] in (2, 4) else None
    colour = pixels[:, :, :-1] if alpha is not None else pixels
    colour = np.repeat(colour, 3, axis=2) if colour.shape[2] == 1 else colour[:, :, ::-1]  # BGR
    if alpha is None:
        return np.ascontiguousarray(colour), depth
    return np.ascontiguousarray(np.concatenate([colour * alpha, alpha], axis=2)), depth


def _read_exr(path: Path) -> tuple[np.ndarray, str]:
    import OpenEXR

    try:
        with OpenEXR.File(str(path), separate_channels=True) as exr:
            channels = {name: np.asarray(c.pixels) for name, c in exr.channels().items()}
    except (RuntimeError, OSError) as err:
        reason = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise UserError(f"{path}: not a readable OpenEXR file ({reason})") from None
    if not {"R", "G", "B"} <= channels.keys():
        have = ", ".join(sorted(channels)) or "none"
        raise UserError(f"{path}: EXR has no R, G, B channels (it has {have}); expected RGB(A)")
    names = ["R", "G", "B", "A"] if "A" in channels else ["R", "G", "B"]
    planes = [channels[n] for n in names]
    if any(p.dtype not in (np.float16, np.float32) for p in planes):
        raise UserError(f"{path}: EXR channels must be half or float, not integer")
    depth = "float" if any(p.dtype == np.float32 for p in planes) else "half"
    pixels = np.stack([p.astype(np.float32) for p in planes], axis=-1)  # EXR is premultiplied
    return np.ascontiguousarray(pixels), depth


# ---------------------------------------------------------------------------------------------
# Conversions


def straight(pixels: np.ndarray) -> np.ndarray:
    """Premultiplied RGBA -> straight RGBA (colour / alpha; 0 where alpha is 0). RGB unchanged."""
    if pixels.shape[-1] != 4:
        return pixels
    alpha = pixels[..., 3:]
    colour = np.divide(pixels[..., :3], alpha, out=np.zeros_like(pixels[..., :3]), where=alpha > 0)
    return np.concatenate([colour, alpha], axis=-1)


def quantize(pixels: np.ndarray, depth: str) -> np.ndarray:
    """Float values in [0, 1] -> uint8 / uint16 for "8-bit" / "16-bit" (clipped, rounded)."""
    full, dtype = (255.0, np.uint8) if depth == "8-bit" else (65535.0, np.uint16)
    return np.round(np.clip(pixels, 0.0, 1.0) * full).astype(dtype)


def over_white(pixels: np.ndarray) -> np.ndarray:
    """RGB of a frame composited onto white (premultiplied "over"); RGB frames unchanged."""
    if pixels.shape[-1] != 4:
        return pixels
    return pixels[..., :3] + (1.0 - pixels[..., 3:])


def to_rgb8(pixels: np.ndarray) -> np.ndarray:
    """A frame as ``uint8 (h, w, 3)`` RGB for 8-bit consumers (MP4, GIF, the diffusion models):
    alpha composited onto white, values clipped to [0, 1] (no tone mapping)."""
    return np.ascontiguousarray(quantize(over_white(pixels), "8-bit"))


def from_rgb8(rgb: np.ndarray) -> np.ndarray:
    """``uint8 (h, w, 3)`` RGB -> a float32 frame (the inverse of to_rgb8 for opaque frames)."""
    return rgb.astype(np.float32) / np.float32(255.0)


def describe(depth: str, channels: int) -> str:
    """'16-bit RGBA', 'half RGB', ... for messages and sidecars."""
    return f"{depth} {'RGBA' if channels == 4 else 'RGB'}"


# ---------------------------------------------------------------------------------------------
# Writing stills


def write_frame(
    path: str | os.PathLike, pixels: np.ndarray, depth: str, overwrite: bool = False
) -> Path:
    """Write a frame (the contract above) as PNG (8 or 16-bit, straight alpha) or EXR (half or
    float, premultiplied), chosen by the suffix, atomically. PNG gets 16 bits when ``depth`` is
    16-bit, half or float (values clipped to [0, 1]); EXR gets float32 only for "float"."""
    path = Path(path)
    if path.exists() and not overwrite:
        raise UserError(f"{path} exists; pass --overwrite to replace it")
    suffix = path.suffix.lower()
    if suffix == ".exr":
        with atomic_path(path) as tmp:
            _write_exr(tmp, pixels, np.float32 if depth == "float" else np.float16)
        return path
    if suffix not in (".png", ".tif", ".tiff"):
        raise UserError(f"{path}: cannot write '{path.suffix}' frames; use .png or .exr")
    values = quantize(straight(pixels), "8-bit" if depth == "8-bit" else "16-bit")
    order = [2, 1, 0, 3] if values.shape[-1] == 4 else [2, 1, 0]
    ok, encoded = cv2.imencode(suffix, np.ascontiguousarray(values[..., order]))
    if not ok:
        raise RuntimeError(f"{path}: encoding failed")
    with atomic_path(path) as tmp:
        tmp.write_bytes(encoded.tobytes())
    return path


def _write_exr(path: Path, pixels: np.ndarray, dtype) -> None:
    import OpenEXR

    names = "RGBA" if pixels.shape[-1] == 4 else "RGB"
    channels = {n: np.ascontiguousarray(pixels[..., i].astype(dtype)) for i, n in enumerate(names)}
    header = {"compression": OpenEXR.ZIP_COMPRESSION, "type": OpenEXR.scanlineimage}
    with OpenEXR.File(header, channels) as exr:
        exr.write(str(path))


# ---------------------------------------------------------------------------------------------
# ProRes


def prores_profile(channels: int) -> str:
    """ProRes 4444 (with alpha) for RGBA frames, 422 HQ for RGB."""
    return "4444" if channels == 4 else "422hq"


def write_prores(
    path: str | os.PathLike,
    frames: Iterable[np.ndarray],
    fps: float,
    profile: str = "422hq",
    overwrite: bool = False,
) -> Path:
    """Encode frames (the contract above, streamed) as a ProRes ``.mov`` through PyAV, atomically.

    ``422hq``: ProRes 422 HQ, 10-bit 4:2:2 (odd widths padded by repeating the last column);
    ``4444``: ProRes 4444, 4:4:4 with a straight alpha channel (RGB frames get opaque alpha).
    FFmpeg's ProRes encoders write garbage alpha at the right edge of widths that are not a
    multiple of 16 (measured: alpha off by 0.5 in some runs), so 4444 frames are padded to one
    with transparent columns (said on stderr). BT.709 matrix, limited range, tagged. Float
    values are clipped to [0, 1].
    """
    import av

    path = Path(path)
    if profile not in PRORES_PROFILES:
        raise ValueError(f"ProRes profile must be one of {sorted(PRORES_PROFILES)}, not {profile}")
    if path.exists() and not overwrite:
        raise UserError(f"{path} exists; pass --overwrite to replace it")
    rate = Fraction(fps).limit_denominator(1001)
    pix_fmt, number = PRORES_PROFILES[profile]
    with atomic_path(path) as tmp, av.open(str(tmp), "w", format="mov") as out:
        stream = None
        for index, frame in enumerate(frames):
            if stream is None:
                size = frame.shape[:2]
                width = coded_width(size[1], pix_fmt)
                stream = _prores_stream(out, rate, (size[0], width), pix_fmt, number)
                if width > size[1] + 1:
                    _note_padding(path, size[1], width)
            elif frame.shape[:2] != size:
                raise ValueError(f"frame {index} is {frame.shape[:2]}, frame 0 was {size}")
            out.mux(stream.encode(_prores_frame(frame, pix_fmt, index)))
        if stream is None:
            raise ValueError(f"{path}: no frames to write")
        out.mux(stream.encode(None))
    return path


def _note_padding(path: Path, width: int, coded: int) -> None:
    print(
        f"animatic: note: {path.name}: ProRes 4444 frames padded from {width} to {coded} px "
        "wide with transparent columns (FFmpeg's encoder needs a multiple of 16 for clean alpha)",
        file=sys.stderr,
    )


def coded_width(width: int, pix_fmt: str) -> int:
    """The width a ProRes stream is encoded at: even for 4:2:2, a multiple of 16 for 4444."""
    step = 2 if pix_fmt == "yuv422p10le" else 16
    return -(-width // step) * step


def _prores_stream(out, rate: Fraction, size: Sequence[int], pix_fmt: str, profile: str):
    from av.video.reformatter import ColorPrimaries, ColorRange, Colorspace, ColorTrc

    stream = out.add_stream("prores_ks", rate=rate)
    stream.height, stream.width = size
    stream.pix_fmt = pix_fmt
    stream.options = {"profile": profile, "vendor": "apl0"}
    codec = stream.codec_context
    codec.colorspace = Colorspace.ITU709
    codec.color_range = ColorRange.MPEG
    codec.color_primaries = ColorPrimaries.BT709
    codec.color_trc = ColorTrc.BT709
    return stream


def _prores_frame(pixels: np.ndarray, pix_fmt: str, pts: int):
    import av

    from pipeline.io_video import bt709_limited

    pad = ((0, 0), (0, coded_width(pixels.shape[1], pix_fmt) - pixels.shape[1]), (0, 0))
    if pix_fmt == "yuv422p10le":
        values = np.pad(over_white(pixels), pad, mode="edge")
    elif pixels.shape[-1] == 4:
        values = np.pad(straight(pixels), pad)
    else:
        opaque = np.concatenate([pixels, np.ones_like(pixels[..., :1])], axis=-1)
        values = np.pad(opaque, pad)
    values = np.ascontiguousarray(quantize(values, "16-bit"))
    kind = "rgba64le" if values.shape[-1] == 4 else "rgb48le"
    return bt709_limited(av.VideoFrame.from_ndarray(values, format=kind), pix_fmt, pts)
