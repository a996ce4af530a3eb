"""Drawing a storyboard's panels: files moved or copied, artists' images fitted, prompts drawn
in batches (each shot's panels with their anchor under consistency), and the manifest rewritten
as each panel finishes, so even ``kill -9`` leaves a folder a rerun resumes from.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

import cv2
import numpy as np
from tqdm import tqdm

from keyframe.errors import UserError
from pipeline import io
from pipeline.shotlist import ShotList
from pipeline.storyboard_folder import Found
from pipeline.storyboard_manifest import (
    file_sha256,
    manifest_core,
    progress_manifest,
    sha256,
    write_manifest,
)
from pipeline.storyboard_models import KeyframeFn, PanelModels, model_id
from pipeline.storyboard_plan import Plan


@dataclass
class Progress:
    """A run's finished panels (indices) and the images it drew or read."""

    found: Found
    shots: ShotList
    model: str  # the default keyframe model's id, for the manifest
    plan: Plan
    pending: set[int] = field(default_factory=set)
    done: list[int] = field(default_factory=list)
    images: dict[int, np.ndarray] = field(default_factory=dict)

    def manifest(self) -> dict:
        """The manifest as the folder is now."""
        records, old = self.plan.records, self.found.records
        return progress_manifest(self.shots, self.model, records, old, self.pending, self.done)

    def finished(self, index: int, image: np.ndarray | None = None) -> None:
        """Note a finished panel (saving its image) in the manifest at once."""
        if image is not None:
            record = self.plan.records[index]
            path = io.write_png(self.found.folder / record["file"], image, overwrite=True)
            record["file_sha256"] = file_sha256(path)
            self.images[index] = image
        self.done.append(index)
        write_manifest(self.found.folder, self.manifest())


def draw_panels(
    board: Progress, models: PanelModels, batch_size: int, noise_share: float, verbose: bool
) -> dict:
    """Write every pending panel's file; the final manifest, written if anything changed."""
    folder, plan = board.found.folder, board.plan
    folder.mkdir(parents=True, exist_ok=True)
    copies = {i: path.read_bytes() for i, path in plan.reuse.items()}
    board.pending = plan.pending
    if board.pending:  # before any panel: a killed run leaves a manifest a rerun can resume from
        write_manifest(folder, board.manifest())
    try:
        for index, source in plan.renames.items():
            os.replace(source, folder / plan.records[index]["file"])
            board.finished(index)
        for index, data in copies.items():
            with io.atomic_path(folder / plan.records[index]["file"]) as tmp:
                tmp.write_bytes(data)
            plan.records[index]["file_sha256"] = sha256(data)
            board.finished(index)
        width, height = board.shots.width, board.shots.height
        for index in plan.todo:
            if plan.records[index]["source"] == "image":
                image = io.read_image(plan.records[index]["image"])
                board.finished(index, fit_image(image, width, height))
        _draw_prompts(board, models, batch_size, noise_share, verbose)
    finally:
        manifest = board.manifest()
        if board.done or manifest_core(manifest) != manifest_core(board.found.old):
            write_manifest(folder, manifest)
    return manifest


def _groups(plan: Plan) -> dict[tuple, list[int]]:
    """The panels to draw, grouped by what one model call shares: (model, steps, guidance,
    anchor); a shot's anchor is in its own group when drawn, for its panels to see."""
    prompt_todo, groups = plan.prompt_todo, {}
    anchors_drawn = {a for i, a in plan.anchor_of.items() if i in prompt_todo}
    for index in prompt_todo:
        record = plan.records[index]
        anchor = plan.anchor_of.get(index, index if index in anchors_drawn else None)
        key = (record["model"], record["steps"], record["guidance"], anchor)
        groups.setdefault(key, []).append(index)
    return groups


def _draw_prompts(
    board: Progress, models: PanelModels, batch_size: int, noise_share: float, verbose: bool
) -> None:
    """Draw the prompt panels, a batch per model call, saving each as it comes."""
    records, groups = board.plan.records, _groups(board.plan)
    for model, *_, anchor in groups:
        if anchor is not None and not getattr(models.drawer(model), "supports_anchors", False):
            raise UserError(f"keyframe model {model}: cannot keep panels consistent")
    quiet = None if verbose else True
    total = len(board.plan.prompt_todo)
    with tqdm(total=total, desc="storyboard", unit="panel", disable=quiet) as bar:
        for (model, steps, guidance, anchor), indices in groups.items():
            for batch, anchors in _batches(indices, anchor, batch_size):
                drawn = _draw(
                    models.drawer(model), [records[i] for i in batch], steps, guidance,
                    anchors, noise_share,
                )  # fmt: skip
                fresh = [i for i in batch if i in indices and i not in board.done]
                for index, image in zip(batch, drawn, strict=True):
                    if index not in fresh:
                        continue  # the anchor again, drawn only for the others to see
                    board.finished(index, fit_image(image, board.shots.width, board.shots.height))
                bar.update(len(fresh))


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
    """One model call: the records' images, checked to be uint8 (n, h, w, 3)."""
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
