"""Keyframe models for storyboard panels: loading one by name (a trained model, a diffusers
folder or the shapes-world oracle), choosing each panel's, and checking prompts against its words.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from keyframe.errors import UserError
from pipeline import io
from pipeline.devices import resolve_device
from pipeline.shotlist import DIFFUSERS, Panel, ShotList, panel_error
from pipeline.storyboard_options import say

# prompts, negative prompts, seeds (one per image), steps, guidance (None: the model's own
# default) -> uint8 (n, h, w, 3).
# A KeyframeFn may carry `model_id` (str, part of the panel hashes) and `check_prompt(prompt)`
# (raises UserError for a prompt it cannot draw, so errors come before any work). One with
# `supports_anchors = True` also takes `anchors=` (each image's anchor index in the batch) and
# `noise_share=` for --consistency (see keyframe.consistency).
KeyframeFn = Callable[[list[str], list[str], list[int], int, float], np.ndarray]

ORACLE = "oracle"


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
    from keyframe import hub
    from keyframe.inference import image_generators

    try:
        pipe = hub.from_pretrained(name, "keyframe", resolve_device(device))
    except UserError as err:
        raise UserError(f"keyframe {err}; for a preview use --keyframe-model oracle") from None
    pipe.latent_size((height, width))  # a size the model cannot draw fails before any panel

    def draw(prompts, negatives, seeds, steps, guidance, anchors=None, noise_share=0.0):
        if anchors is not None:
            # One batch, so every image sees its anchor; one generator per image's own seed.
            batch = pipe(
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
            batch = pipe(
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


def vocabulary_entry(models: PanelModels, record: dict, verbose: bool) -> dict:
    """The panel prompt's check against its model's vocabulary, as its manifest entry."""
    from keyframe.vocabulary import check_prompt

    model = record["model"]
    vocabulary = models.vocabulary(model)
    if vocabulary is None and model != ORACLE and model not in models.noted:
        models.noted.add(model)
        say(verbose, f"note: keyframe model {model} records no vocabulary; prompts unchecked")
    return check_prompt(vocabulary, record["prompt"] or "").record()


def check_prompts(
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
            say(verbose, f"panel {panel.number}: {words} (flagged on the contact sheet)")
    for model in dict.fromkeys(records[i]["model"] for i in todo):
        check = getattr(models.drawer(model), "check_prompt", None)
        for i in todo if check is not None else ():
            if records[i]["model"] != model:
                continue
            try:
                check(records[i]["prompt"])
            except UserError as err:
                raise panel_error(shots, shots.panels[i], "prompt", str(err)) from None
