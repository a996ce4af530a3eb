"""Where `animatic render` writes: the film (MP4, GIF, ProRes, a PNG folder or an editorial
cut, by the output's name) and the work folder of finished segments that a render resumes from.
"""

from __future__ import annotations

import os
import secrets
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from keyframe.errors import UserError
from pipeline import editorial, io, io_video

PARTS_MARKER = ".animatic-parts"


def output_kind(path: Path) -> str:
    """``mp4``, ``gif``, ``mov``, ``cut`` (editorial) or ``png`` (a folder), from the name."""
    suffix = path.suffix.lower()
    if suffix in (".mp4", ".gif", ".mov"):
        return suffix[1:]
    if editorial.is_cut(path):
        return "cut"
    if suffix == "" or path.is_dir():
        return "png"
    raise UserError(
        f"{path}: unsupported output format '{path.suffix}'; expected .mp4, .gif, .mov "
        "(ProRes), .otio / .edl / .xml (a cut: one file per shot), or a folder for PNGs"
    )


def write_film(
    path: Path, frames: Iterator[np.ndarray], fps: float, overwrite: bool = False
) -> list[Path]:
    """Write frames by the output's kind; a new PNG sequence folder appears only when complete."""
    kind = output_kind(path)
    if kind != "png" or path.exists():
        return io_video.write_video(path, frames, fps, overwrite=overwrite)
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    try:
        written = io.write_png_sequence(tmp, frames, name=path.name)
        os.replace(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return [path / p.name for p in written]


def parts_folder(out: Path) -> Path:
    """The default work folder of an output: ``film.mp4`` -> ``film.mp4.parts``."""
    return out.with_name(out.name + ".parts")


@contextmanager
def work_folder(folder: Path) -> Iterator[Path]:
    """Create (or reopen) a render's work folder; refuse a folder animatic did not make.

    If the render fails before anything worth resuming from is stored, the folder goes again.
    """
    marker = folder / PARTS_MARKER
    if folder.exists() and not marker.is_file():
        if not folder.is_dir():
            raise UserError(f"{folder}: is a file; expected a work folder")
        if any(folder.iterdir()):
            raise UserError(f"{folder}: exists and is not an animatic work folder; pick --work")
    folder.mkdir(parents=True, exist_ok=True)
    marker.touch()
    try:
        yield folder
    except BaseException:
        if {p.name for p in folder.iterdir()} <= {PARTS_MARKER}:
            shutil.rmtree(folder, ignore_errors=True)
        raise
