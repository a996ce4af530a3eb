"""The storyboard folder as a run finds it: the last run's manifest and panel files, which of
them were edited by hand (kept and locked, never overwritten) and which panels are locked.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from keyframe.errors import UserError
from pipeline import io, safety
from pipeline.shotlist import ShotList
from pipeline.storyboard_manifest import file_sha256, read_manifest
from pipeline.storyboard_options import Options, say


@dataclass(frozen=True)
class Found:
    """A board folder's last run: its manifest (None for a new folder), its panel records by
    number, the panels whose file was edited by hand, and the panels locked this run."""

    folder: Path
    old: dict | None
    records: dict[int, dict]
    edited: set[int]
    locked: set[int]

    @property
    def files(self) -> dict[Path, dict]:
        """The last run's panel files (they may be gone) and their records."""
        return {self.folder / r["file"]: r for r in self.records.values()}

    def has_file(self, record: dict | None) -> bool:
        return record is not None and (self.folder / record["file"]).is_file()

    def files_by_hash(self) -> dict[str, Path]:
        """Files the last run drew, by their inputs' hash, for panels that moved (not edited)."""
        return {
            r.get("input_hash"): self.folder / r["file"]
            for n, r in self.records.items()
            if n not in self.edited and (self.folder / r["file"]).is_file()
        }


def open_board(folder: Path, overwrite: bool) -> dict | None:
    """The folder's manifest (None if it has none), once the folder is known to be writable."""
    old = read_manifest(folder) if folder.is_dir() else None
    if old is not None:
        safety.clean_temporaries(folder)  # left by a run killed mid-write (we hold the lock)
    if old is None:
        io.check_writable(folder, overwrite, folder=True)
    elif not os.access(folder, os.W_OK | os.X_OK):
        raise UserError(f"{folder}: storyboard folder is not writable")
    return old


def find_panels(
    folder: Path, old: dict | None, shots: ShotList, options: Options, verbose: bool
) -> Found:
    """What the last run left, and which panels stay as they are (locked or edited by hand)."""
    records = {}
    for record in old["panels"] if old is not None else ():
        if isinstance(record.get("number"), int) and isinstance(record.get("file"), str):
            records[record["number"]] = record
    count = len(shots.panels)
    # Hand-edited panel files are the user's work: keep them, locked.
    edited = set()
    for number, record in records.items():
        path = folder / record["file"]
        mine = number <= count and number not in options.reroll and path.is_file()
        if mine and file_sha256(path) != record.get("file_sha256"):
            edited.add(number)
    if edited:
        listed = ", ".join(map(str, sorted(edited)))
        say(verbose, f"panels {listed}: edited by hand; kept and locked (--unlock to redraw)")
    locked = {n for n, r in records.items() if r.get("locked") and n <= count}
    locked = (locked | options.lock | edited) - options.unlock
    _check_rerolls(shots, options.reroll, locked)
    return Found(folder, old, records, edited, locked)


def _check_rerolls(shots: ShotList, reroll: set[int], locked: set[int]) -> None:
    """Only unlocked panels drawn from a prompt can be re-rolled."""
    for number in sorted(reroll):
        panel = shots.panels[number - 1]
        if number in locked:
            raise UserError(f"--panel {number}: panel {number} is locked; --unlock {number} first")
        if panel.image is not None:
            raise UserError(
                f"--panel {number}: panel {number} is the artist's image {panel.image.name}; "
                "there is nothing to re-roll"
            )


def remove_old_files(found: Found, records: list[dict]) -> None:
    """Delete files of panels that are gone or renamed; hand-edited files are never deleted."""
    keep = {found.folder / r["file"] for r in records}
    for path, record in found.files.items():
        ours = file_sha256(path) == record.get("file_sha256")
        if path not in keep and path.is_file() and ours:
            path.unlink()
