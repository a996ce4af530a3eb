"""`animatic storyboard`: a shot list -> one keyframe per panel, a contact sheet and a manifest.

The folder it writes (and owns)::

    shot01_panel01.png ...   one PNG per panel, named by shot (cuts start a new shot) and panel
    contact_sheet.png, .pdf  every panel with its number, timing, seed and prompt (PDF: to print,
                             with lines for notes)
    storyboard.otio          the panels as a timeline for editors (OpenTimelineIO)
    storyboard.json          everything needed to redraw each panel, plus the film's timing

A panel is redrawn only when the content hash of its inputs changes (prompt, negative prompt,
seed, steps, guidance, model id and size; for an artist's ``image:``, the file's bytes and the
size), so a rerun with no changes writes nothing. With ``consistency``, the first prompt panel of
each shot is its anchor: the shot's other panels are drawn in one batch with it, attending to it
(training-free, keyframe.consistency), and their hashes include the anchor's prompt, negative
prompt and seed and the noise share; the anchor itself draws as it would alone.
``reroll`` (``--panel N``) redraws chosen panels with a new seed and leaves every other file
alone; the new seed is remembered until that panel's seed in the shot list is edited. Locked
panels keep their image (and the settings that made it) whatever the shot list says; locks follow
panel numbers. A panel PNG edited by hand is kept and locked, never overwritten.
"""

from __future__ import annotations

import argparse
import functools
import hashlib
import json
import math
import os
import re
import secrets
import sys
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
from tqdm import tqdm

from keyframe.errors import UserError
from pipeline import io, locks, safety
from pipeline.devices import resolve_device
from pipeline.editorial import STORYBOARD_OTIO, write_storyboard_otio
from pipeline.sheet import contact_sheet, write_pdf
from pipeline.shotlist import (
    DIFFUSERS,
    MAX_SEED,
    Panel,
    ShotList,
    load_shotlist,
    panel_error,
)
from pipeline.timeline import FramePlan, make_plan

# prompts, negative prompts, seeds (one per image), steps, guidance -> uint8 (n, h, w, 3).
# A KeyframeFn may carry `model_id` (str, part of the panel hashes) and `check_prompt(prompt)`
# (raises UserError for a prompt it cannot draw, so errors come before any work). One with
# `supports_anchors = True` also takes `anchors=` (each image's anchor index in the batch) and
# `noise_share=` for --consistency (see keyframe.consistency).
KeyframeFn = Callable[[list[str], list[str], list[int], int, float], np.ndarray]

MANIFEST = "storyboard.json"
SHEET = "contact_sheet.png"
SHEET_PDF = "contact_sheet.pdf"
FORMAT = "animatic-storyboard"
VERSION = 1
ORACLE = "oracle"
DEFAULT_BATCH = 8


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


# ---------------------------------------------------------------------------------------------
# Keyframe models


def model_id(fn: Callable) -> str:
    """The id a callable model contributes to content hashes: its ``model_id`` or its name."""
    return getattr(fn, "model_id", None) or f"{fn.__module__}.{fn.__qualname__}"


def oracle_keyframes(width: int, height: int) -> KeyframeFn:
    """The shapes-world renderer as a keyframe model: each still caption drawn exactly.

    A preview and a reference, not a model: the seed places each object inside its named cell;
    negative prompts, steps and guidance are ignored. Non-square sizes are centre crops.
    """
    from pipeline.baselines import scene_for_caption
    from pipeline.shapes import parse_caption, render_still

    side = max(width, height)

    def check_prompt(prompt: str | None) -> None:
        description = parse_caption(prompt or "")
        if description is None or description.kind != "still":
            raise UserError(
                "the oracle keyframe model draws only shapes-world still captions like "
                f"'a large red circle at the top left on a navy background', got {prompt!r}"
            )

    def draw(prompts, negatives, seeds, steps, guidance, anchors=None, noise_share=0.0):
        del anchors, noise_share  # each caption is drawn exactly: consistent already
        images = []
        for prompt, seed in zip(prompts, seeds, strict=True):
            check_prompt(prompt)
            still = render_still(scene_for_caption(prompt, np.random.default_rng(seed)), side)
            top, left = (side - height) // 2, (side - width) // 2
            images.append(still[top : top + height, left : left + width])
        return np.stack(images)

    draw.model_id = ORACLE
    draw.check_prompt = check_prompt
    draw.supports_anchors = True
    return draw


def model_name(name: str) -> str:
    """A model's id in hashes: an existing path made absolute (however it was written; after
    ``diffusers:`` too), or the name as given."""
    prefix = DIFFUSERS if name.startswith(DIFFUSERS) else ""
    path = Path(name[len(prefix) :]).expanduser()
    return prefix + str(path.resolve()) if name not in (ORACLE,) and path.exists() else name


def pretrained_keyframes(name: str, width: int, height: int, device: str | None = None):
    """A trained keyframe model as a KeyframeFn drawing at ``width`` x ``height``."""
    from keyframe.module import image_generators
    from keyframe.pretrained import from_pretrained

    try:
        module = from_pretrained(name, device=resolve_device(device))
    except UserError as err:
        raise UserError(f"keyframe {err}; for a preview use --keyframe-model oracle") from None
    module.latent_size((height, width))  # a size the model cannot draw fails before any panel

    def draw(prompts, negatives, seeds, steps, guidance, anchors=None, noise_share=0.0):
        if anchors is not None:
            # One batch, so every image sees its anchor; one generator per image's own seed.
            batch = module.sample(
                prompts,
                negative_prompts=negatives,
                steps=steps,
                guidance=guidance,
                generator=[image_generators(seed, 1)[0] for seed in seeds],
                size=(height, width),
                anchor=list(anchors),
                noise_share=noise_share,
            )
            return np.stack([io.to_uint8_rgb(image) for image in batch])
        images = []
        # The model seeds image i with seed + i, so runs of consecutive seeds share one batch.
        for start, stop in _consecutive_runs(seeds):
            batch = module.sample(
                prompts[start:stop],
                negative_prompts=negatives[start:stop],
                steps=steps,
                guidance=guidance,
                seed=seeds[start],
                size=(height, width),
            )
            images.extend(io.to_uint8_rgb(image) for image in batch)
        return np.stack(images)

    draw.model_id = model_name(name)
    draw.supports_anchors = True
    return draw


def diffusers_keyframes(name: str, width: int, height: int, device: str | None = None):
    """A local diffusers text-to-image folder (``diffusers:PATH``) as a KeyframeFn; films smaller
    than the model's own size are drawn at its size and scaled down (with a note)."""
    from keyframe import diffusers_model as dm

    model = dm.load_diffusers(name, resolve_device(device))
    size = dm.draw_size(model, width, height)
    if size != (width, height):
        print(f"note: {name} draws at {size[0]}x{size[1]} (its size); panels are scaled to "
              f"{width}x{height}", file=sys.stderr)  # fmt: skip

    def draw(prompts, negatives, seeds, steps, guidance, anchors=None, noise_share=0.0):
        return dm.sample_diffusers(
            model, prompts, negatives, seeds, steps, guidance, size, anchors=anchors,
            noise_share=noise_share,
        )  # fmt: skip

    draw.model_id = model_name(name)
    draw.supports_anchors = model.unet is not None
    return draw


def _consecutive_runs(seeds: Sequence[int]) -> list[tuple[int, int]]:
    """Index ranges [start, stop) over which the seeds go up by one."""
    runs, start = [], 0
    for i in range(1, len(seeds) + 1):
        if i == len(seeds) or seeds[i] != seeds[i - 1] + 1:
            runs.append((start, i))
            start = i
    return runs


def load_keyframe_model(
    name: str, width: int, height: int, device: str | None = None
) -> KeyframeFn:
    """A KeyframeFn by name: ``oracle`` (shapes-world renderer), ``diffusers:PATH`` or a trained
    model name/path."""
    if name == ORACLE:
        return oracle_keyframes(width, height)
    if name.startswith(DIFFUSERS):
        return diffusers_keyframes(name, width, height, device)
    return pretrained_keyframes(name, width, height, device)


def model_vocabulary(name: str):
    """The words a named model was trained on (keyframe.vocabulary), read without loading it;
    None for the oracle (its own check), diffusers folders and models that record none."""
    from keyframe.pretrained import resolve_model
    from keyframe.vocabulary import load_vocabulary

    if name == ORACLE or name.startswith(DIFFUSERS):
        return None
    try:
        return load_vocabulary(resolve_model(name))
    except UserError as err:
        raise UserError(f"keyframe {err}; for a preview use --keyframe-model oracle") from None


class PanelModels:
    """Each panel's keyframe model (``keyframe_model`` for every panel if given, else the panel's
    own ``models.keyframe``, else the shot list's), loaded once when first needed."""

    def __init__(self, shots: ShotList, override, width: int, height: int, device=None):
        self.fn = None if override is None or isinstance(override, str) else override
        default = override if isinstance(override, str) else shots.keyframe_model
        self.default = model_id(self.fn) if self.fn is not None else model_name(default)
        self.override = override is not None
        self.size, self.device = (width, height), device
        self.loaded: dict[str, KeyframeFn] = {}
        self.vocabularies: dict[str, object] = {}
        self.noted: set[str] = set()  # models already said to record no vocabulary

    def name(self, panel: Panel) -> str:
        if self.override or panel.keyframe_model is None:
            return self.default
        return model_name(panel.keyframe_model)

    def drawer(self, name: str) -> KeyframeFn:
        if self.fn is not None:
            return self.fn
        if name not in self.loaded:
            self.loaded[name] = load_keyframe_model(name, *self.size, self.device)
        return self.loaded[name]

    def vocabulary(self, name: str):
        if self.fn is not None:
            return getattr(self.fn, "vocabulary", None)
        if name not in self.vocabularies:
            self.vocabularies[name] = model_vocabulary(name)
        return self.vocabularies[name]


# ---------------------------------------------------------------------------------------------
# Manifest helpers


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _file_sha256(path: Path) -> str | None:
    try:
        return _sha256(path.read_bytes())
    except OSError:
        return None


def input_hash(params: dict) -> str:
    """Content hash of the inputs that determine a panel's image."""
    return _sha256(json.dumps(params, sort_keys=True, separators=(",", ":")).encode())


def shot_numbers(panels: Sequence[Panel]) -> list[int]:
    """1-based shot of each panel: a panel after a ``cut`` starts a new shot."""
    shots, shot = [], 1
    for index in range(len(panels)):
        if index and panels[index - 1].transition == "cut":
            shot += 1
        shots.append(shot)
    return shots


def panel_file(shot: int, number: int) -> str:
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


def _core(manifest: dict | None) -> dict | None:
    """The manifest without its provenance (which changes every run)."""
    if manifest is None:
        return None
    return {k: v for k, v in manifest.items() if k != "provenance"}


def _write_manifest(folder: Path, manifest: dict) -> None:
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


def parse_panels(text: str | Iterable[int] | None, count: int, option: str) -> set[int]:
    """``"1,3"``, ``"2-4"``, ``"all"`` or numbers -> 1-based panel numbers, checked in range."""
    if text is None:
        return set()
    if isinstance(text, str):
        if text.strip().lower() == "all":
            return set(range(1, count + 1))
        numbers = set()
        for part in text.split(","):
            match = re.fullmatch(r"\s*(\d+)\s*(?:-\s*(\d+)\s*)?", part)
            if match is None:
                raise UserError(
                    f"{option} {text!r}: expected panel numbers like '2', '1,3', '2-4' or 'all'"
                )
            low, high = int(match.group(1)), int(match.group(2) or match.group(1))
            numbers.update(range(low, high + 1))
    else:
        numbers = {int(n) for n in text}
    bad = sorted(n for n in numbers if not 1 <= n <= count)
    if bad:
        raise UserError(
            f"{option} {bad[0]}: no such panel; the shot list has {count} panels (1-{count})"
        )
    return numbers


def fit_image(image: np.ndarray, width: int, height: int) -> np.ndarray:
    """Scale to cover ``width`` x ``height`` and centre-crop (an artist's key at film size)."""
    h, w = image.shape[:2]
    if (w, h) == (width, height):
        return image
    scale = max(width / w, height / h)
    size = (max(width, round(w * scale)), max(height, round(h * scale)))
    method = cv2.INTER_AREA if scale < 1 else cv2.INTER_CUBIC
    resized = cv2.resize(image, size, interpolation=method)
    top, left = (size[1] - height) // 2, (size[0] - width) // 2
    return np.ascontiguousarray(resized[top : top + height, left : left + width])


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


# ---------------------------------------------------------------------------------------------
# The storyboard


def _say(verbose: bool, message: str) -> None:
    if verbose:
        tqdm.write(message, file=sys.stderr)


def _params(
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
        "steps": panel.steps,
        "guidance": float(panel.guidance),
        "model": model,
        "width": width,
        "height": height,
    }


_PARAM_KEYS = {
    "image": ("source", "image", "image_sha256", "prompt", "width", "height"),
    "prompt": (
        "source",
        "prompt",
        "negative",
        "seed",
        "steps",
        "guidance",
        "model",
        "width",
        "height",
        "anchor",
    ),
}


def _record_params(record: dict) -> dict:
    keys = _PARAM_KEYS.get(record.get("source"), ())
    return {key: record.get(key) for key in keys}


def _check_folder(folder: Path, old: dict | None, overwrite: bool) -> None:
    if old is None:
        io.check_writable(folder, overwrite, folder=True)
    elif not os.access(folder, os.W_OK | os.X_OK):
        raise UserError(f"{folder}: storyboard folder is not writable")


def _exclusive(function: Callable) -> Callable:
    """Run ``function(shots, out, ...)`` holding the lock of folder ``out`` (pipeline.locks)."""

    @functools.wraps(function)
    def locked(shots, out, *args, **kwargs):
        with locks.exclusive(out, what=f"storyboard {out}"):
            return function(shots, out, *args, **kwargs)

    return locked


@_exclusive
def storyboard(
    shots: str | os.PathLike | ShotList,
    out: str | os.PathLike,
    keyframe_model: str | KeyframeFn | None = None,
    reroll: str | Iterable[int] | None = None,
    seed: int | None = None,
    lock: str | Iterable[int] | None = None,
    unlock: str | Iterable[int] | None = None,
    overwrite: bool = False,
    batch_size: int = DEFAULT_BATCH,
    device: str | None = None,
    verbose: bool = True,
    consistency: bool | None = None,
    noise_share: float | None = None,
    force: bool = False,
) -> Storyboard:
    """Draw one keyframe per panel of a shot list into folder ``out``; see the module docstring.

    ``keyframe_model``: a KeyframeFn, a model name/path, ``"oracle"``, or None for the shot
    list's ``models.keyframe``. ``reroll``: panel numbers to redraw with a new seed (``seed``, if
    given, for a single panel). ``lock``/``unlock``: numbers or ``"all"``. ``overwrite`` allows a
    folder that is not a storyboard yet to be written into. ``consistency`` conditions each
    shot's panels on its first prompt panel, starting from ``noise_share`` (0-1) of its noise;
    None for either takes the shot list's ``consistency:`` / ``noise_share:``. A panel's model
    may be its own (``models: {keyframe: ...}``) unless ``keyframe_model`` is given. Prompts are
    checked against their model's vocabulary: unknown words are flagged (manifest, sheet, a
    line); a prompt naming no subject the model knows is an error unless ``force``.
    """
    if not isinstance(shots, ShotList):
        shots = load_shotlist(shots)
    if consistency is None:
        consistency = shots.consistency
    if noise_share is None:
        noise_share = shots.noise_share if consistency else 0.0
    folder = Path(out)
    if batch_size < 1:
        raise UserError(f"batch size: expected a whole number >= 1, got {batch_size}")
    old = read_manifest(folder) if folder.is_dir() else None
    if old is not None:
        safety.clean_temporaries(folder)  # left by a run killed mid-write (we hold the lock)
    _check_folder(folder, old, overwrite)
    count = len(shots.panels)
    reroll = parse_panels(reroll, count, "--panel")
    lock, unlock = parse_panels(lock, count, "--lock"), parse_panels(unlock, count, "--unlock")
    if seed is not None:
        if len(reroll) != 1:
            raise UserError("--seed needs exactly one --panel to re-roll")
        if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed <= MAX_SEED:
            raise UserError(f"--seed: expected a whole number from 0 to 2**63 - 1, got {seed!r}")
    if lock & unlock:
        raise UserError(f"panel {min(lock & unlock)} is both locked and unlocked")
    if not isinstance(noise_share, (int, float)) or not 0 <= noise_share <= 1:
        raise UserError(f"--noise-share: expected a number from 0 to 1, got {noise_share!r}")
    if noise_share and not consistency:
        raise UserError("--noise-share needs --consistency")

    width, height = shots.width, shots.height
    models = PanelModels(shots, keyframe_model, width, height, device)

    old_records = {}
    if old is not None:
        for record in old["panels"]:
            if isinstance(record.get("number"), int) and isinstance(record.get("file"), str):
                old_records[record["number"]] = record
    old_files = {folder / r["file"]: r for r in old_records.values()}

    # Hand-edited panel files are the user's work: keep them, locked.
    edited = set()
    for number, record in old_records.items():
        path = folder / record["file"]
        mine = number <= count and number not in reroll and path.is_file()
        if mine and _file_sha256(path) != record.get("file_sha256"):
            edited.add(number)
    if edited:
        listed = ", ".join(map(str, sorted(edited)))
        _say(verbose, f"panels {listed}: edited by hand; kept and locked (--unlock to redraw)")

    locked = {n for n, r in old_records.items() if r.get("locked") and n <= count}
    locked = (locked | lock | edited) - unlock
    for number in sorted(reroll):
        panel = shots.panels[number - 1]
        if number in locked:
            raise UserError(f"--panel {number}: panel {number} is locked; --unlock {number} first")
        if panel.image is not None:
            raise UserError(
                f"--panel {number}: panel {number} is the artist's image {panel.image.name}; "
                "there is nothing to re-roll"
            )

    shots_of = shot_numbers(shots.panels)
    key_frames = np.cumsum([0] + [p.duration for p in shots.panels[:-1]]).tolist()
    records: list[dict] = []
    todo: list[int] = []  # indices whose image must be drawn or copied in
    renames: dict[int, Path] = {}  # index -> its existing file, to move onto its new name
    reuse: dict[int, Path] = {}  # index -> an existing file made from the same inputs
    by_hash = {
        r.get("input_hash"): folder / r["file"]
        for n, r in old_records.items()
        if n not in edited and (folder / r["file"]).is_file()
    }
    stale = []
    shot_anchor: dict[tuple, int] = {}  # (shot, model) -> index of its anchor (consistency)
    anchor_of: dict[int, int] = {}  # index -> index of its anchor, for the other prompt panels
    for index, panel in enumerate(shots.panels):
        number = panel.number
        record = old_records.get(number)
        have_file = record is not None and (folder / record["file"]).is_file()
        untouched = bool(reroll) and number not in reroll and record is not None
        placed = {
            "number": number,
            "shot": shots_of[index],
            # A re-roll renames nothing; other runs follow the shot numbering.
            "file": record["file"] if reroll and record else panel_file(shots_of[index], number),
            "duration": panel.duration,
            "hold": panel.hold,
            "transition": panel.transition,
            "key_frame": int(key_frames[index]),
            "locked": number in locked,
        }
        model = models.name(panel)
        current = _current_params(panel, record, number in reroll, seed, model, width, height)
        if consistency and panel.image is None:
            anchor = shot_anchor.setdefault((shots_of[index], model), index)
            if anchor != index and records[anchor]["source"] == "prompt":
                anchor_of[index] = anchor
                current["anchor"] = _anchor_params(records[anchor], noise_share)
        if record is not None and (number in locked or untouched):
            # Kept with the settings that made it (a lock, or a re-roll of other panels).
            new = {**record, **placed}
            if number in edited:
                new["file_sha256"] = _file_sha256(folder / record["file"])
            if not have_file:
                image = record.get("image")
                if record.get("source") == "image" and not Path(str(image)).is_file():
                    raise panel_error(shots, panel, "image", f"locked panel's {image} is gone")
                _say(verbose, f"panel {number}: file missing; redrawing it from its record")
                todo.append(index)
            elif record["file"] != new["file"]:
                renames[index] = folder / record["file"]
            changed = input_hash(current) != record.get("input_hash")
            if untouched and number not in locked and changed:
                stale.append(number)
            records.append(new)
            continue
        digest = input_hash(current)
        new = {
            **placed,
            **current,
            "seed": current.get("seed", panel.seed),
            "shotlist_seed": panel.seed,
            "input_hash": digest,
            "file_sha256": record.get("file_sha256") if have_file else None,
        }
        if new["source"] == "prompt":
            new["vocabulary"] = _vocabulary_check(models, new, verbose)
        up_to_date = have_file and record.get("input_hash") == digest and number not in edited
        if number in reroll or not up_to_date:
            if digest in by_hash and number not in reroll:
                reuse[index] = by_hash[digest]
            else:
                todo.append(index)
        elif record["file"] != new["file"]:
            renames[index] = folder / record["file"]
        records.append(new)
    if stale:
        listed = ", ".join(map(str, stale))
        _say(verbose, f"panels {listed}: out of date with the shot list (run without --panel)")

    targets = {folder / records[i]["file"] for i in [*todo, *renames, *reuse]}
    drawing = {folder / name for name in (old or {}).get("drawing", [])}  # a killed run's
    for path in targets:
        if path.exists() and path not in {*old_files, *drawing} and not overwrite:
            raise UserError(f"{path} exists and is not part of this storyboard; pass --overwrite")

    prompt_todo = [i for i in todo if records[i]["source"] == "prompt"]
    _check_prompts(shots, records, prompt_todo, models, force, verbose)

    folder.mkdir(parents=True, exist_ok=True)
    done: list[int] = []
    images: dict[int, np.ndarray] = {}
    copies = {i: path.read_bytes() for i, path in reuse.items()}
    pending = set(todo) | set(renames) | set(reuse)

    def finished(index: int) -> None:
        """Note a finished panel in the manifest at once, so even `kill -9` keeps it."""
        done.append(index)
        _write_manifest(
            folder, _progress(shots, models.default, records, old_records, pending, done)
        )

    if pending:  # before any panel: a killed run leaves a manifest a rerun can resume from
        _write_manifest(
            folder, _progress(shots, models.default, records, old_records, pending, done)
        )
    try:
        for index, source in renames.items():
            os.replace(source, folder / records[index]["file"])
            finished(index)
        for index, data in copies.items():
            with io.atomic_path(folder / records[index]["file"]) as tmp:
                tmp.write_bytes(data)
            records[index]["file_sha256"] = _sha256(data)
            finished(index)
        for index in todo:
            if records[index]["source"] == "image":
                image = fit_image(io.read_image(records[index]["image"]), width, height)
                _save_panel(folder, records[index], image, images, index)
                finished(index)
        groups: dict[tuple, list[int]] = {}
        anchors_drawn = {a for i, a in anchor_of.items() if i in prompt_todo}
        for index in prompt_todo:
            record = records[index]
            anchor = anchor_of.get(index, index if index in anchors_drawn else None)
            key = (record["model"], record["steps"], record["guidance"], anchor)
            groups.setdefault(key, []).append(index)
        for model, *_, anchor in groups:
            if anchor is not None and not getattr(models.drawer(model), "supports_anchors", False):
                raise UserError(f"keyframe model {model}: cannot keep panels consistent")
        quiet = None if verbose else True
        with tqdm(total=len(prompt_todo), desc="storyboard", unit="panel", disable=quiet) as bar:
            for (model, steps, guidance, anchor), indices in groups.items():
                for batch, anchors in _batches(indices, anchor, batch_size):
                    drawn = _draw(
                        models.drawer(model), [records[i] for i in batch], steps, guidance,
                        anchors, noise_share,
                    )  # fmt: skip
                    fresh = [i for i in batch if i in indices and i not in done]
                    for index, image in zip(batch, drawn, strict=True):
                        if index not in fresh:
                            continue  # the anchor again, drawn only for the others to see
                        image = fit_image(image, width, height)
                        _save_panel(folder, records[index], image, images, index)
                        finished(index)
                    bar.update(len(fresh))
    finally:
        manifest = _progress(shots, models.default, records, old_records, pending, done)
        records = manifest["panels"]
        if done or _core(manifest) != _core(old):
            _write_manifest(folder, manifest)

    for index, record in enumerate(records):
        if index not in images:
            images[index] = _read_panel(folder / record["file"], width, height)
    derived = [folder / SHEET, folder / SHEET_PDF, folder / STORYBOARD_OTIO]
    if done or _core(manifest) != _core(old) or not all(p.is_file() for p in derived):
        captions = [_caption(record, shots.fps) for record in records]
        columns = min(4, max(1, math.ceil(math.sqrt(len(records)))))
        panels = [images[i] for i in range(count)]
        marks = [flagged(record) for record in records]
        sheet = contact_sheet(panels, captions, columns, flagged=marks)
        io.write_png(derived[0], sheet, overwrite=True)
        write_pdf(derived[1], panels, captions, shots.title)
        write_storyboard_otio(folder, manifest)

    if not reroll:
        # Files of panels that are gone or renamed; hand-edited files are never deleted.
        keep = {folder / r["file"] for r in records}
        for path, record in old_files.items():
            ours = _file_sha256(path) == record.get("file_sha256")
            if path not in keep and path.is_file() and ours:
                path.unlink()
    generated = tuple(records[i]["number"] for i in sorted(set(done) - set(renames)))
    return Storyboard(folder, manifest, tuple(images[i] for i in range(count)), generated)


def _read_panel(path: Path, width: int, height: int) -> np.ndarray:
    image = io.read_image(path)
    if image.shape != (height, width, 3):
        raise UserError(
            f"{path}: panel image is {image.shape[1]}x{image.shape[0]}, "
            f"the film is {width}x{height}"
        )
    return image


def _effective_seed(panel: Panel, record: dict | None) -> int:
    """The shot list's seed, unless a re-roll chose another and the shot list's is unchanged."""
    if record and record.get("source") == "prompt" and record.get("shotlist_seed") == panel.seed:
        return int(record["seed"])
    return panel.seed


def _current_params(
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
        return _params(panel, panel.seed, model, width, height, _file_sha256(panel.image))
    if rerolled:
        chosen = seed if seed is not None else secrets.randbelow(2**32)
    else:
        chosen = _effective_seed(panel, record)
    return _params(panel, chosen, model, width, height, None)


def _anchor_params(record: dict, noise_share: float) -> dict:
    """What an anchor panel contributes to the hash of a panel drawn attending to it."""
    return {
        "prompt": record["prompt"],
        "negative": record["negative"],
        "seed": record["seed"],
        "noise_share": float(noise_share),
    }


def _vocabulary_check(models: PanelModels, record: dict, verbose: bool) -> dict:
    """The panel prompt's check against its model's vocabulary, as its manifest entry."""
    from keyframe.vocabulary import check_prompt

    model = record["model"]
    vocabulary = models.vocabulary(model)
    if vocabulary is None and model != ORACLE and model not in models.noted:
        models.noted.add(model)
        _say(verbose, f"note: keyframe model {model} records no vocabulary; prompts unchecked")
    return check_prompt(vocabulary, record["prompt"] or "").record()


def _check_prompts(
    shots: ShotList, records: list[dict], todo: list[int], models: PanelModels, force: bool,
    verbose: bool,
) -> None:  # fmt: skip
    """Before drawing: a panel whose prompt names no subject its model knows is an error unless
    `force`; unknown words get a line; a model's own check_prompt (the oracle's) runs."""
    from keyframe.vocabulary import PromptCheck, describe

    for i in todo:
        record, panel = records[i], shots.panels[i]
        flags = record.get("vocabulary") or {}
        check = PromptCheck(tuple(flags.get("unknown", ())), bool(flags.get("no_subject")), True)
        words = describe(check, models.vocabulary(record["model"]), record["model"])
        if check.no_subject and not force:
            raise panel_error(shots, panel, "prompt", f"{words}; --force draws it anyway")
        if check.flagged:
            _say(verbose, f"panel {panel.number}: {words} (flagged on the contact sheet)")
    for model in dict.fromkeys(records[i]["model"] for i in todo):
        check = getattr(models.drawer(model), "check_prompt", None)
        for i in todo if check is not None else ():
            if records[i]["model"] != model:
                continue
            try:
                check(records[i]["prompt"])
            except UserError as err:
                raise panel_error(shots, shots.panels[i], "prompt", str(err)) from None


def _batches(
    indices: list[int], anchor: int | None, batch_size: int
) -> list[tuple[list[int], list[int] | None]]:
    """Model calls for one group of panels: (panel indices, anchor positions or None). With an
    anchor, every call starts with the anchor panel and its other panels attend to it."""
    if anchor is None:
        return [(indices[s : s + batch_size], None) for s in range(0, len(indices), batch_size)]
    others = [i for i in indices if i != anchor]
    if not others:
        return [([anchor], None)]
    size = max(1, batch_size - 1)
    chunks = [others[s : s + size] for s in range(0, len(others), size)]
    return [([anchor, *chunk], [0] * (len(chunk) + 1)) for chunk in chunks]


def _draw(
    fn: KeyframeFn,
    records: list[dict],
    steps: int,
    guidance: float,
    anchors: list[int] | None = None,
    noise_share: float = 0.0,
) -> np.ndarray:
    prompts = [r["prompt"] for r in records]
    negatives = [r["negative"] for r in records]
    seeds = [int(r["seed"]) for r in records]
    if anchors is None:
        images = fn(prompts, negatives, seeds, steps, guidance)
    else:
        images = fn(prompts, negatives, seeds, steps, guidance, anchors=anchors,
                    noise_share=noise_share)  # fmt: skip
    images = np.asarray(images)
    if images.dtype != np.uint8 or images.ndim != 4 or images.shape[0] != len(records):
        raise ValueError(
            f"keyframe model {model_id(fn)}: expected uint8 ({len(records)}, h, w, 3), "
            f"got {images.dtype} {images.shape}"
        )
    return images


def _save_panel(folder: Path, record: dict, image: np.ndarray, images: dict, index: int) -> None:
    path = io.write_png(folder / record["file"], image, overwrite=True)
    record["file_sha256"] = _file_sha256(path)
    images[index] = image


def _progress(
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
        return _manifest(shots, model, records, True)
    now = [old_records.get(r["number"]) if i in waiting else r for i, r in enumerate(records)]
    drawing = sorted({records[i]["file"] for i in waiting})
    return _manifest(shots, model, [r for r in now if r is not None], False, drawing)


def _manifest(
    shots: ShotList, model: str, records: list[dict], complete: bool, drawing: list | None = None
) -> dict:
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
        images.append(_read_panel(path, width, height))
    try:
        plan_from_manifest(manifest)
    except (KeyError, TypeError, ValueError) as err:
        raise UserError(f"{folder / MANIFEST}: bad timing in the manifest ({err})") from None
    return Storyboard(folder, manifest, tuple(images))


# ---------------------------------------------------------------------------------------------
# The command


def add_keyframe_model_argument(parser: argparse.ArgumentParser) -> None:
    """`--keyframe-model` and `--force`, shared by `storyboard` and `render`."""
    parser.add_argument(
        "--keyframe-model",
        metavar="NAME",
        help="trained model name or path for every panel (default: each panel's, else the shot "
        "list's models.keyframe); diffusers:PATH, a local diffusers text-to-image folder; "
        "'oracle' draws shapes-world captions exactly (a preview, no model)",
    )
    parser.add_argument(
        "--force",
        action="store_true",
        help="draw panels whose prompt names no subject their model knows (else an error); "
        "they are flagged on the contact sheet",
    )


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("shots", metavar="SHOTS.yaml", help="the shot list")
    parser.add_argument("--out", required=True, metavar="DIR", help="storyboard folder")
    parser.add_argument(
        "--panel", metavar="N", help="re-roll only these panels (e.g. 3 or 2,5) with new seeds"
    )
    parser.add_argument("--seed", type=int, metavar="K", help="the seed for a --panel re-roll")
    parser.add_argument("--lock", metavar="N", help="keep these panels as they are (1,3 or all)")
    parser.add_argument("--unlock", metavar="N", help="let these panels change again (or all)")
    add_keyframe_model_argument(parser)
    parser.add_argument(
        "--batch-size",
        type=int,
        default=DEFAULT_BATCH,
        metavar="B",
        help="panels per model call (8)",
    )
    parser.add_argument(
        "--consistency",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="keep each shot's look: its panels attend to the shot's first panel (no training); "
        "default: the shot list's 'consistency:'",
    )
    parser.add_argument(
        "--noise-share",
        type=float,
        default=None,
        metavar="M",
        help="with --consistency, the share of the anchor's initial noise, 0-1 (shot list's, or 0)",
    )
    parser.add_argument("--device", default="auto", help="cpu, cuda, ... (default: auto)")
    parser.add_argument(
        "--overwrite", action="store_true", help="write into a folder that is not a storyboard"
    )
    parser.add_argument("--quiet", action="store_true", help="no progress bar or notes")


def run(args: argparse.Namespace) -> int:
    board = storyboard(
        args.shots,
        args.out,
        keyframe_model=args.keyframe_model,
        reroll=args.panel,
        seed=args.seed,
        lock=args.lock,
        unlock=args.unlock,
        overwrite=args.overwrite,
        batch_size=args.batch_size,
        device=args.device,
        verbose=not args.quiet,
        consistency=args.consistency,
        noise_share=args.noise_share,
        force=args.force,
    )
    if not args.quiet:
        made = ", ".join(map(str, board.generated)) or "none (all up to date)"
        print(f"{board.folder}: {len(board.images)} panels; drawn this run: {made}")
        if args.panel and board.generated:
            for number in board.generated:
                record = board.panels[number - 1]
                if record["source"] == "prompt" and record["seed"] != record["shotlist_seed"]:
                    print(f"panel {number}: seed {record['seed']} (put 'seed: {record['seed']}' "
                          "in the shot list to keep it there)")  # fmt: skip
    return 0
