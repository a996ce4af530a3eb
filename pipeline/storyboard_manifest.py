"""The storyboard folder's record, ``storyboard.json``: content hashes, reading and writing it
(rewritten after each panel, so a killed run resumes), and reading a finished board back.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from keyframe.errors import UserError
from pipeline import io, safety
from pipeline.shotlist import Panel, ShotList
from pipeline.timeline import FramePlan, make_plan

MANIFEST = "storyboard.json"
SHEET = "contact_sheet.png"
SHEET_PDF = "contact_sheet.pdf"
FORMAT = "animatic-storyboard"
VERSION = 1


@dataclass(frozen=True)
class Storyboard:
    """A storyboard folder: its manifest and the panel images (uint8 (h, w, 3)) in order."""

    folder: Path
    manifest: dict
    images: tuple[np.ndarray, ...]
    generated: tuple[int, ...] = ()  # panel numbers drawn or copied in by this run

    @property
    def panels(self) -> list[dict]:
        return self.manifest["panels"]


def sha256(data: bytes) -> str:
    """The hex SHA-256 of some bytes."""
    return hashlib.sha256(data).hexdigest()


def file_sha256(path: Path) -> str | None:
    """The hex SHA-256 of a file's bytes; None if it cannot be read."""
    try:
        return sha256(path.read_bytes())
    except OSError:
        return None


def input_hash(params: dict) -> str:
    """Content hash of the inputs that determine a panel's image."""
    return sha256(json.dumps(params, sort_keys=True, separators=(",", ":")).encode())


def shot_numbers(panels: Sequence[Panel]) -> list[int]:
    """1-based shot of each panel: a panel after a ``cut`` starts a new shot."""
    shots, shot = [], 1
    for index in range(len(panels)):
        if index and panels[index - 1].transition == "cut":
            shot += 1
        shots.append(shot)
    return shots


def panel_file(shot: int, number: int) -> str:
    """A panel's file name: its shot and its number."""
    return f"shot{shot:02d}_panel{number:02d}.png"


def read_manifest(folder: Path) -> dict | None:
    """The storyboard.json of ``folder``; None if there is none."""
    path = folder / MANIFEST
    if not path.is_file():
        return None
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise UserError(f"{path}: unreadable storyboard manifest ({err})") from None
    if not (
        isinstance(manifest, dict)
        and manifest.get("format") == FORMAT
        and isinstance(manifest.get("panels"), list)
        and all(isinstance(p, dict) for p in manifest["panels"])
    ):
        raise UserError(f"{path}: not an animatic storyboard manifest")
    if manifest.get("version") != VERSION:
        raise UserError(
            f"{path}: storyboard format version {manifest.get('version')!r}, "
            f"this animatic reads version {VERSION}; write a new storyboard folder"
        )
    for number, record in enumerate(manifest["panels"], start=1):
        safety.plain_name(record.get("file"), f"{path}: panel {number}'s file")
    for name in manifest.get("drawing", []):
        safety.plain_name(name, f"{path}: drawing")
    return manifest


def manifest_core(manifest: dict | None) -> dict | None:
    """The manifest without its provenance (which changes every run)."""
    if manifest is None:
        return None
    return {k: v for k, v in manifest.items() if k != "provenance"}


def write_manifest(folder: Path, manifest: dict) -> None:
    """Replace ``folder/storyboard.json`` atomically, stamped with this run's provenance."""
    text = json.dumps({**manifest, "provenance": io.provenance()}, indent=2)
    with io.atomic_path(folder / MANIFEST) as tmp:
        tmp.write_text(text + "\n", encoding="utf-8")


def plan_from_manifest(manifest: dict) -> FramePlan:
    """The frame plan recorded in a storyboard manifest."""
    panels = manifest["panels"]
    return make_plan(
        [p["duration"] for p in panels],
        [p["hold"] for p in panels],
        [p["transition"] for p in panels],
        loop=manifest["loop"],
        fps=manifest["fps"],
    )


def read_panel(path: Path, width: int, height: int) -> np.ndarray:
    """A panel image, checked to be the film's size."""
    image = io.read_image(path)
    if image.shape != (height, width, 3):
        raise UserError(
            f"{path}: panel image is {image.shape[1]}x{image.shape[0]}, "
            f"the film is {width}x{height}"
        )
    return image


def progress_manifest(
    shots: ShotList,
    model: str,
    records: list[dict],
    old_records: dict,
    pending: set[int],
    done: list[int],
) -> dict:
    """The manifest as the folder is now: panels still pending keep their old records (or none),
    and until all are done it lists the files being drawn (a rerun may replace them)."""
    waiting = pending - set(done)
    if not waiting:
        return build_manifest(shots, model, records, True)
    now = [old_records.get(r["number"]) if i in waiting else r for i, r in enumerate(records)]
    drawing = sorted({records[i]["file"] for i in waiting})
    return build_manifest(shots, model, [r for r in now if r is not None], False, drawing)


def build_manifest(
    shots: ShotList, model: str, records: list[dict], complete: bool, drawing: list | None = None
) -> dict:
    """The manifest of a storyboard of ``records``; ``drawing``: files a killed run may leave."""
    source = Path(shots.source)
    extra = {"drawing": drawing} if drawing else {}
    return {
        "format": FORMAT,
        "version": VERSION,
        "title": shots.title,
        "shotlist": str(source.resolve()) if source.is_file() else shots.source,
        "fps": shots.fps,
        "width": shots.width,
        "height": shots.height,
        "loop": shots.loop,
        "num_frames": shots.num_frames,
        "models": {"keyframe": model, "interpolate": shots.interpolate_model},
        "contact_sheet": SHEET,
        "complete": complete,
        **extra,
        "panels": records,
    }


def load_storyboard(folder: str | os.PathLike) -> Storyboard:
    """Read a storyboard folder (manifest and panel images) as written by ``storyboard``."""
    folder = Path(folder)
    if not folder.is_dir():
        raise UserError(f"{folder}: storyboard folder not found")
    manifest = read_manifest(folder)
    if manifest is None:
        raise UserError(
            f"{folder}: not a storyboard folder (no {MANIFEST}); "
            "give a shot list YAML or a folder written by 'animatic storyboard'"
        )
    if not manifest.get("complete", False):
        raise UserError(f"{folder}: the storyboard is incomplete (interrupted); rerun storyboard")
    width, height = manifest.get("width"), manifest.get("height")
    images = []
    for record in manifest["panels"]:
        path = folder / record["file"]  # a plain name: read_manifest checked it
        if not path.is_file():
            raise UserError(f"{path}: panel {record.get('number')} is missing; rerun storyboard")
        images.append(read_panel(path, width, height))
    try:
        plan_from_manifest(manifest)
    except (KeyError, TypeError, ValueError) as err:
        raise UserError(f"{folder / MANIFEST}: bad timing in the manifest ({err})") from None
    return Storyboard(folder, manifest, tuple(images))
