"""File and image I/O of the pipeline (video files: pipeline.io_video): everything else is
frames in, frames out. Stills in, PNGs out, write checks, and the JSON sidecar of every output.

Frames are ``np.uint8`` arrays of shape ``(h, w, 3)`` in RGB order. Every writer is atomic (a
temp file in the same folder, ``os.replace``'d onto the target only when complete) and refuses
to replace an existing file unless ``overwrite=True``.
"""

from __future__ import annotations

import dataclasses
import enum
import functools
import json
import os
import platform
import re
import subprocess
import sys
from collections.abc import Iterable
from contextlib import suppress
from datetime import datetime, timezone
from pathlib import Path

import cv2
import numpy as np

from keyframe.errors import UserError
from keyframe.files import atomic_path
from keyframe.image_decode import IMAGE_SUFFIXES, decode_image, image_files
from pipeline import safety

# ---------------------------------------------------------------------------------------------
# Reading images


def read_image(path: str | os.PathLike) -> np.ndarray:
    """Read any still image OpenCV decodes as ``uint8 (h, w, 3)`` RGB.

    Conversions: grayscale is repeated to RGB; 16-bit is scaled to 8-bit (x / 257, rounded);
    float images (EXR/HDR) are clipped to [0, 1] with no tone mapping; an alpha channel is
    composited onto white (transparent paper reads as white paper, as artists draw on it).
    JPEG EXIF orientation is applied.
    """
    path = Path(path)
    if not path.exists():
        raise UserError(f"{path}: image not found")
    if not path.is_file():
        raise UserError(f"{path}: expected an image file, got a folder")
    safety.check_image_file(path)  # before decoding: a 12000x9000 key would need 324 MB
    try:
        data = np.fromfile(path, dtype=np.uint8)  # imdecode: no trouble with non-ASCII paths
    except OSError as err:
        raise UserError(f"{path}: cannot read image ({err.strerror})") from None
    return decode_image(data, path)


def list_images(folder: str | os.PathLike) -> list[Path]:
    """Image files directly inside ``folder`` in natural order; hidden files are skipped."""
    folder = Path(folder)
    if not folder.is_dir():
        raise UserError(f"{folder}: expected a folder of images, but no such folder")
    paths = image_files(folder)
    if not paths:
        raise UserError(f"{folder}: no images found (expected {', '.join(IMAGE_SUFFIXES)})")
    return paths


def to_uint8_rgb(image: np.ndarray) -> np.ndarray:
    """Float ``c h w`` in [-1, 1] (numpy or CPU tensor) -> ``uint8 (h, w, 3)`` RGB."""
    array = np.asarray(image, dtype=np.float32)
    if array.ndim != 3 or array.shape[0] != 3:
        raise ValueError(f"expected a (3, h, w) image, got shape {array.shape}")
    array = np.round((np.clip(array, -1.0, 1.0) + 1.0) * 127.5).astype(np.uint8)
    return np.ascontiguousarray(array.transpose(1, 2, 0))


def from_uint8_rgb(rgb: np.ndarray) -> np.ndarray:
    """``uint8 (h, w, 3)`` RGB -> float32 ``c h w`` in [-1, 1] (the inverse of to_uint8_rgb)."""
    check_frame(rgb)
    return np.ascontiguousarray(rgb.transpose(2, 0, 1).astype(np.float32) / 127.5 - 1.0)


# ---------------------------------------------------------------------------------------------
# Safe writing (`atomic_path`, shared with the model stages, lives in keyframe.files)


def check_writable(path: str | os.PathLike, overwrite: bool, folder: bool = False) -> None:
    """Raise UserError unless ``path`` can be written: call it before work that takes long.

    An existing file (or, with ``folder=True``, a non-empty folder) is refused unless
    ``overwrite``; so is a path whose nearest existing parent is a file or not writable.
    """
    path = Path(path)
    if path.exists():
        if path.is_dir() and not folder:
            raise UserError(f"{path}: is a folder; expected a file name")
        if not path.is_dir() and folder:
            raise UserError(f"{path}: is a file; expected a folder")
        if not overwrite and not (folder and not any(path.iterdir())):
            raise UserError(f"{path} exists; pass --overwrite to replace it")
    parent = path if path.is_dir() else path.parent
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    if not parent.is_dir():
        raise UserError(f"{path}: cannot create it, {parent} is a file")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise UserError(f"{path}: folder {parent} is not writable")
    safety.probe_writable(path)  # read-only file systems and full disks, before the work


def refuse_existing(path: Path, overwrite: bool) -> None:
    if path.exists() and not overwrite:
        raise UserError(f"{path} exists; pass --overwrite to replace it")
    if path.is_dir():
        raise UserError(f"{path}: is a folder; expected a file name")


def check_frame(frame: np.ndarray) -> None:
    if not (
        isinstance(frame, np.ndarray)
        and frame.dtype == np.uint8
        and frame.ndim == 3
        and frame.shape[2] == 3
    ):
        shape = getattr(frame, "shape", None)
        dtype = getattr(frame, "dtype", type(frame).__name__)
        raise ValueError(f"expected a uint8 (h, w, 3) RGB frame, got {dtype} {shape}")


# ---------------------------------------------------------------------------------------------
# Writing images


def write_png(path: str | os.PathLike, rgb: np.ndarray, overwrite: bool = False) -> Path:
    """Write one ``uint8 (h, w, 3)`` RGB image as PNG, atomically."""
    path = Path(path)
    check_frame(rgb)
    refuse_existing(path, overwrite)
    ok, encoded = cv2.imencode(".png", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    if not ok:
        raise RuntimeError(f"{path}: PNG encoding failed")
    with atomic_path(path) as tmp:
        tmp.write_bytes(encoded.tobytes())
    return path


def sequence_name(name: str, index: int) -> str:
    """File name of frame ``index`` (0-based) of a PNG sequence: ``name.0001.png`` is index 0."""
    return f"{name}.{index + 1:04d}.png"


def write_png_sequence(
    folder: str | os.PathLike,
    frames: Iterable[np.ndarray],
    name: str = "frame",
    overwrite: bool = False,
) -> list[Path]:
    """Write frames as ``folder/name.0001.png``, ... (1-based, 4 digits, more past 9999).

    Frames stream: each is written (atomically) as it arrives. Without ``overwrite`` an
    existing sequence of the same name is refused before anything is written; with it, frames
    of that sequence numbered beyond the new end are removed, so no stale tail remains.
    """
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise UserError(f"{folder}: is a file; expected a folder for the PNG sequence")
    pattern = re.compile(rf"{re.escape(name)}\.\d{{4,}}\.png")
    existing = set()
    if folder.is_dir():
        existing = {p for p in folder.iterdir() if pattern.fullmatch(p.name)}
    if existing and not overwrite:
        raise UserError(
            f"{folder}: already holds a sequence {sorted(existing)[0].name}...; "
            "pass --overwrite to replace it"
        )
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for index, frame in enumerate(frames):
        written.append(write_png(folder / sequence_name(name, index), frame, overwrite=True))
    if not written:
        raise ValueError(f"{folder}: no frames to write")
    for stale in existing - set(written):
        stale.unlink(missing_ok=True)
    return written


# ---------------------------------------------------------------------------------------------
# Provenance: seeds, configs and versions recorded next to every output


@functools.lru_cache(maxsize=1)
def _static_provenance() -> dict:
    from importlib import metadata

    try:
        version = metadata.version("animatic")
    except metadata.PackageNotFoundError:
        version = "unknown"
    record = {
        "animatic": version,
        "python": platform.python_version(),
        "numpy": np.__version__,
        "torch": None,
        "cuda": None,
        "platform": platform.platform(),
    }
    torch = sys.modules.get("torch")  # importing torch only to read its version costs seconds
    if torch is not None:
        record["torch"], record["cuda"] = torch.__version__, torch.version.cuda
    else:
        with suppress(metadata.PackageNotFoundError):
            record["torch"] = metadata.version("torch")
    record.update(_git_state(Path(__file__).resolve().parents[1]))
    return record


def _git_state(root: Path) -> dict:
    """The source checkout's commit and whether it has uncommitted changes (None if no git)."""
    state: dict = {"git_commit": None, "git_dirty": None}
    if not (root / ".git").exists():
        return state
    try:
        run = functools.partial(
            subprocess.run, cwd=root, capture_output=True, text=True, timeout=5, check=True
        )
        state["git_commit"] = run(["git", "rev-parse", "HEAD"]).stdout.strip() or None
        dirty = run(["git", "status", "--porcelain", "--untracked-files=no"]).stdout.strip()
        state["git_dirty"] = bool(dirty)
    except (OSError, subprocess.SubprocessError):
        pass
    return state


def provenance() -> dict:
    """Versions, platform, git commit, command line and UTC time of this run."""
    return {
        **_static_provenance(),
        "argv": list(sys.argv),
        "time": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }


def _json_default(value):
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return dataclasses.asdict(value)
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, (set, frozenset)):
        return sorted(value)
    if hasattr(value, "tolist"):  # numpy arrays and scalars, CPU tensors
        return value.tolist()
    raise TypeError(f"cannot record a {type(value).__name__} in JSON: {value!r}")


def sidecar_path(path: str | os.PathLike) -> Path:
    """Where the record of output ``path`` goes: ``film.mp4`` -> ``film.mp4.json``."""
    path = Path(path)
    return path.with_name(path.name + ".json")


def write_sidecar(path: str | os.PathLike, record: dict) -> Path:
    """Write ``record`` plus ``provenance()`` as JSON next to output ``path``, atomically.

    An existing sidecar is replaced: it describes the output that was just written.
    """
    target = sidecar_path(path)
    text = json.dumps({**record, "provenance": provenance()}, indent=2, default=_json_default)
    text = json.dumps(safety.json_safe(json.loads(text)), indent=2, allow_nan=False)  # no NaN
    with atomic_path(target) as tmp:
        tmp.write_text(text + "\n", encoding="utf-8")
    return target
