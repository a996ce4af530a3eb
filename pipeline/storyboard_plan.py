"""What a storyboard run does to each panel: its new manifest record, and whether its file is
drawn, copied from a file made from the same inputs, renamed, or kept. A panel is redrawn only
when the content hash of its inputs changes; locked panels keep the settings that made them.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from keyframe.errors import UserError
from pipeline.shotlist import Panel, ShotList, panel_error
from pipeline.storyboard_folder import Found
from pipeline.storyboard_manifest import file_sha256, input_hash, panel_file, shot_numbers
from pipeline.storyboard_models import PanelModels, vocabulary_entry
from pipeline.storyboard_options import Options, say


@dataclass
class Plan:
    """Each panel's new record, in order, and the work on its file (by panel index)."""

    records: list[dict] = field(default_factory=list)
    todo: list[int] = field(default_factory=list)  # images to draw or copy in
    renames: dict[int, Path] = field(default_factory=dict)  # existing file -> its new name
    reuse: dict[int, Path] = field(default_factory=dict)  # a file made from the same inputs
    anchor_of: dict[int, int] = field(default_factory=dict)  # a panel's anchor (consistency)
    stale: list[int] = field(default_factory=list)  # numbers a re-roll of others left stale

    @property
    def prompt_todo(self) -> list[int]:
        """The panels to draw with a keyframe model (not an artist's image)."""
        return [i for i in self.todo if self.records[i]["source"] == "prompt"]

    @property
    def pending(self) -> set[int]:
        """Every panel whose file this run writes."""
        return set(self.todo) | set(self.renames) | set(self.reuse)


def params(
    panel: Panel, seed: int, model: str, width: int, height: int, image_sha: str | None
) -> dict:
    """The inputs that decide a panel's image (hashed), in manifest form."""
    if panel.image is not None:
        return {
            "source": "image",
            "image": str(panel.image),
            "image_sha256": image_sha,
            "prompt": panel.prompt,
            "width": width,
            "height": height,
        }
    return {
        "source": "prompt",
        "prompt": panel.prompt,
        "negative": panel.negative,
        "seed": seed,
        "steps": panel.steps,  # None: the model's own default, as it is when drawn
        "guidance": None if panel.guidance is None else float(panel.guidance),
        "model": model,
        "width": width,
        "height": height,
    }


def effective_seed(panel: Panel, record: dict | None) -> int:
    """The shot list's seed, unless a re-roll chose another and the shot list's is unchanged."""
    if record and record.get("source") == "prompt" and record.get("shotlist_seed") == panel.seed:
        return int(record["seed"])
    return panel.seed


def current_params(
    panel: Panel,
    record: dict | None,
    rerolled: bool,
    seed: int | None,
    model: str,
    width: int,
    height: int,
) -> dict:
    """The inputs the shot list (and a re-roll) ask of a panel now."""
    if panel.image is not None:
        return params(panel, panel.seed, model, width, height, file_sha256(panel.image))
    if rerolled:
        chosen = seed if seed is not None else secrets.randbelow(2**32)
    else:
        chosen = effective_seed(panel, record)
    return params(panel, chosen, model, width, height, None)


def anchor_params(record: dict, noise_share: float) -> dict:
    """What an anchor panel contributes to the hash of a panel drawn attending to it."""
    return {
        "prompt": record["prompt"],
        "negative": record["negative"],
        "seed": record["seed"],
        "noise_share": float(noise_share),
    }


def plan_panels(
    shots: ShotList, found: Found, options: Options, models: PanelModels, verbose: bool
) -> Plan:
    """Each panel's record and its file's work, from the shot list, the options and the folder."""
    plan = Plan()
    shot_of = shot_numbers(shots.panels)
    key_frames = np.cumsum([0] + [p.duration for p in shots.panels[:-1]]).tolist()
    by_hash = found.files_by_hash()
    shot_anchor: dict[tuple, int] = {}  # (shot, model) -> index of its anchor (consistency)
    for index, panel in enumerate(shots.panels):
        record = found.records.get(panel.number)
        placed = _placement(panel, record, shot_of[index], key_frames[index], found, options)
        model = models.name(panel)
        rerolled = panel.number in options.reroll
        current = current_params(
            panel, record, rerolled, options.seed, model, shots.width, shots.height
        )
        if options.consistency and panel.image is None:
            anchor = shot_anchor.setdefault((shot_of[index], model), index)
            if anchor != index and plan.records[anchor]["source"] == "prompt":
                plan.anchor_of[index] = anchor
                current["anchor"] = anchor_params(plan.records[anchor], options.noise_share)
        untouched = bool(options.reroll) and not rerolled and record is not None
        if record is not None and (panel.number in found.locked or untouched):
            # Kept with the settings that made it (a lock, or a re-roll of other panels).
            new = _keep(plan, index, shots, record, placed, current, found, untouched, verbose)
        else:
            new = _update(plan, index, panel, record, placed, current, found, by_hash, rerolled)
            if new["source"] == "prompt":
                new["vocabulary"] = vocabulary_entry(models, new, verbose)
        plan.records.append(new)
    if plan.stale:
        listed = ", ".join(map(str, plan.stale))
        say(verbose, f"panels {listed}: out of date with the shot list (run without --panel)")
    return plan


def _placement(
    panel: Panel, record: dict | None, shot: int, key_frame: int, found: Found, options: Options
) -> dict:
    """A panel's place in the film: number, shot, file name, timing and lock."""
    return {
        "number": panel.number,
        "shot": shot,
        # A re-roll renames nothing; other runs follow the shot numbering.
        "file": record["file"] if options.reroll and record else panel_file(shot, panel.number),
        "duration": panel.duration,
        "hold": panel.hold,
        "transition": panel.transition,
        "key_frame": int(key_frame),
        "locked": panel.number in found.locked,
    }


def _keep(
    plan: Plan, index: int, shots: ShotList, record: dict, placed: dict, current: dict,
    found: Found, untouched: bool, verbose: bool,
) -> dict:  # fmt: skip
    """A kept panel's record: its old one, placed anew; its file redrawn only if it is gone."""
    number, new = placed["number"], {**record, **placed}
    if number in found.edited:
        new["file_sha256"] = file_sha256(found.folder / record["file"])
    if not found.has_file(record):
        image = record.get("image")
        if record.get("source") == "image" and not Path(str(image)).is_file():
            panel = shots.panels[index]
            raise panel_error(shots, panel, "image", f"locked panel's {image} is gone")
        say(verbose, f"panel {number}: file missing; redrawing it from its record")
        plan.todo.append(index)
    elif record["file"] != new["file"]:
        plan.renames[index] = found.folder / record["file"]
    changed = input_hash(current) != record.get("input_hash")
    if untouched and number not in found.locked and changed:
        plan.stale.append(number)
    return new


def _update(
    plan: Plan, index: int, panel: Panel, record: dict | None, placed: dict, current: dict,
    found: Found, by_hash: dict, rerolled: bool,
) -> dict:  # fmt: skip
    """A panel's record as the shot list asks now; its file is drawn (or copied from one made
    from the same inputs) unless its inputs' hash is unchanged and the file is there."""
    digest, have_file = input_hash(current), found.has_file(record)
    new = {
        **placed,
        **current,
        "seed": current.get("seed", panel.seed),
        "shotlist_seed": panel.seed,
        "input_hash": digest,
        "file_sha256": record.get("file_sha256") if have_file else None,
    }
    edited = panel.number in found.edited
    up_to_date = have_file and record.get("input_hash") == digest and not edited
    if rerolled or not up_to_date:
        if digest in by_hash and not rerolled:
            plan.reuse[index] = by_hash[digest]
        else:
            plan.todo.append(index)
    elif record["file"] != new["file"]:
        plan.renames[index] = found.folder / record["file"]
    return new


def check_targets(found: Found, plan: Plan, overwrite: bool) -> None:
    """The files this run writes are this storyboard's (or a killed run's), unless overwrite."""
    records = plan.records
    targets = {found.folder / records[i]["file"] for i in [*plan.todo, *plan.renames, *plan.reuse]}
    drawing = {found.folder / name for name in (found.old or {}).get("drawing", [])}
    ours = {*found.files, *drawing}
    for path in targets:
        if path.exists() and path not in ours and not overwrite:
            raise UserError(f"{path} exists and is not part of this storyboard; pass --overwrite")
