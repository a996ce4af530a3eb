"""A storyboard's derived files: the contact sheet (PNG, and a PDF to print and write notes
on) with each panel's number, timing, seed and prompt, and the editors' ``storyboard.otio``.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from pipeline import io
from pipeline.editorial import STORYBOARD_OTIO, write_storyboard_otio
from pipeline.sheet import contact_sheet, write_pdf
from pipeline.shotlist import ShotList
from pipeline.storyboard_manifest import SHEET, SHEET_PDF, read_panel


def write_sheet(
    folder: Path, shots: ShotList, manifest: dict, images: dict[int, np.ndarray], changed: bool
) -> list[np.ndarray]:
    """Every panel's image in order (``images`` has those drawn this run); the sheet, its PDF
    and the timeline are rewritten if the board ``changed`` or one of them is missing."""
    records = manifest["panels"]
    for index, record in enumerate(records):
        if index not in images:
            images[index] = read_panel(folder / record["file"], shots.width, shots.height)
    panels = [images[i] for i in range(len(shots.panels))]
    derived = [folder / SHEET, folder / SHEET_PDF, folder / STORYBOARD_OTIO]
    if changed or not all(p.is_file() for p in derived):
        captions = [_caption(record, shots.fps) for record in records]
        columns = min(4, max(1, math.ceil(math.sqrt(len(records)))))
        marks = [flagged(record) for record in records]
        sheet = contact_sheet(panels, captions, columns, flagged=marks)
        io.write_png(derived[0], sheet, overwrite=True)
        write_pdf(derived[1], panels, captions, shots.title)
        write_storyboard_otio(folder, manifest)
    return panels


def _caption(record: dict, fps: float) -> str:
    """Contact sheet text under a panel: number, shot, duration, seed, lock; then the prompt."""
    seconds = f"{record['duration'] / fps:.2f}".rstrip("0").rstrip(".")
    head = f"#{record['number']}, shot {record['shot']}, {seconds}s ({record['duration']}f)"
    if record["source"] == "image":
        head += f", image {Path(record['image']).name}"
    else:
        head += f", seed {record['seed']}"
    if record.get("locked"):
        head += ", locked"
    return f"{head}\n{record.get('prompt') or ''}{_flag_text(record)}"


def flagged(record: dict) -> bool:
    """Whether a panel's prompt was flagged by its model's vocabulary check."""
    flags = record.get("vocabulary") or {}
    return bool(flags.get("unknown") or flags.get("no_subject"))


def _flag_text(record: dict) -> str:
    """The contact sheet's line for a flagged panel ("" for others)."""
    if not flagged(record):
        return ""
    flags = record["vocabulary"]
    parts = ["no subject the model knows"] if flags.get("no_subject") else []
    if flags.get("unknown"):
        parts.append(f"unknown words: {', '.join(flags['unknown'])}")
    return "\nFLAGGED: " + "; ".join(parts)
