"""Timelines for editors (OpenTimelineIO): a storyboard as ``storyboard.otio``, a film as a cut.

``storyboard.otio``: one clip per panel (its name, duration, the panel PNG as media, prompt,
seed and timing as metadata). A cut (`animatic render ... --out cut.otio`, ``.edl`` or ``.xml``):
each shot rendered to its own ProRes 422 HQ file in ``cut_media/`` and one clip per shot on the
timeline, so an editor can conform, trim and replace shots. EDL (CMX 3600) and FCP 7 XML go
through OTIO's adapter plug-ins (``otio-cmx3600-adapter``, ``otio-fcp-adapter``).
"""

from __future__ import annotations

import itertools
import os
import secrets
import shutil
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from keyframe.errors import UserError
from keyframe.files import atomic_path
from pipeline import io, media
from pipeline.timeline import FramePlan

SUFFIXES = {".otio": "otio_json", ".edl": "cmx_3600", ".xml": "fcp_xml"}
STORYBOARD_OTIO = "storyboard.otio"
PANEL_METADATA = ("number", "shot", "prompt", "negative", "seed", "hold", "transition", "source")


def _range(frames: int, fps: float):
    import opentimelineio as otio

    rate = float(fps)
    return otio.opentime.TimeRange(
        otio.opentime.RationalTime(0, rate), otio.opentime.RationalTime(frames, rate)
    )


def _clip(name: str, media_path: Path, frames: int, fps: float, metadata: dict):
    import opentimelineio as otio

    reference = otio.schema.ExternalReference(
        target_url=media_path.resolve().as_uri(), available_range=_range(frames, fps)
    )
    return otio.schema.Clip(
        name=name,
        media_reference=reference,
        source_range=_range(frames, fps),
        metadata={"animatic": metadata},
    )


def _timeline(name: str, clips: list, fps: float):
    import opentimelineio as otio

    timeline = otio.schema.Timeline(name=name or "animatic")
    timeline.global_start_time = otio.opentime.RationalTime(0, float(fps))
    track = otio.schema.Track(name="V1", kind=otio.schema.TrackKind.Video)
    track.extend(clips)
    timeline.tracks.append(track)
    return timeline


def adapter_for(path: Path) -> str:
    """The OTIO adapter that writes ``path``'s suffix; UserError if it is not installed."""
    import opentimelineio as otio

    adapter = SUFFIXES.get(path.suffix.lower())
    if adapter is None:
        raise UserError(f"{path}: expected a .otio, .edl or .xml timeline")
    if adapter not in otio.adapters.available_adapter_names():
        plugin = "otio-cmx3600-adapter" if adapter == "cmx_3600" else "otio-fcp-adapter"
        raise UserError(f"{path}: writing {path.suffix} needs `pip install {plugin}`")
    return adapter


def write_timeline(timeline, path: str | Path, overwrite: bool = True) -> Path:
    """Write a timeline by the suffix of ``path`` (.otio, .edl, .xml), atomically."""
    import opentimelineio as otio

    path = Path(path)
    adapter = adapter_for(path)
    if path.exists() and not overwrite:
        raise UserError(f"{path} exists; pass --overwrite to replace it")
    with atomic_path(path) as tmp:
        otio.adapters.write_to_file(timeline, str(tmp), adapter_name=adapter)
    return path


# ---------------------------------------------------------------------------------------------
# Storyboard


def storyboard_timeline(folder: Path, manifest: dict):
    """One clip per panel, in order: the panel image held for the panel's duration."""
    fps = manifest["fps"]
    clips = []
    for record in manifest["panels"]:
        name = Path(record["file"]).stem
        metadata = {key: record.get(key) for key in PANEL_METADATA}
        metadata["duration"] = record["duration"]
        clips.append(_clip(name, folder / record["file"], record["duration"], fps, metadata))
    return _timeline(manifest.get("title") or folder.name, clips, fps)


def write_storyboard_otio(folder: Path, manifest: dict) -> Path:
    """``folder/storyboard.otio`` for the storyboard's manifest (replaced: it is derived)."""
    return write_timeline(storyboard_timeline(folder, manifest), folder / STORYBOARD_OTIO)


# ---------------------------------------------------------------------------------------------
# A film as a cut


def is_cut(path: Path) -> bool:
    return path.suffix.lower() in SUFFIXES


def media_folder(path: Path) -> Path:
    """Where a cut's shot files go: ``cut.otio`` -> ``cut_media/``."""
    return path.with_name(f"{path.stem}_media")


def check_cut(path: Path, overwrite: bool) -> None:
    """Refuse before rendering: an existing timeline or media folder (without ``overwrite``),
    a format whose OTIO adapter is not installed."""
    adapter_for(path)
    io.check_writable(path, overwrite)
    io.check_writable(media_folder(path), overwrite, folder=True)


def shots(plan: FramePlan, manifest: dict) -> list[tuple[int, int, list[dict]]]:
    """The film's shots in order: (first frame, frame count, panel records); a cut starts one."""
    panels = manifest["panels"]
    found: list[tuple[int, int, list[dict]]] = []
    for segment in plan.segments:
        panel = panels[segment.from_panel]
        if found and found[-1][2][0]["shot"] == panel["shot"]:
            start, count, members = found[-1]
            if panel not in members:
                members.append(panel)
            found[-1] = (start, count + segment.num_frames, members)
        else:
            found.append((segment.start_frame, segment.num_frames, [panel]))
    return found


def write_cut(
    path: Path, frames: Iterator[np.ndarray], plan: FramePlan, manifest: dict, overwrite: bool
) -> list[Path]:
    """Each shot's frames (uint8 RGB, streamed in film order) as ``cut_media/shotNN.mov``
    (ProRes 422 HQ), then the timeline at ``path`` with one clip per shot."""
    folder = media_folder(path)
    tmp = folder.with_name(f".{folder.name}.{secrets.token_hex(4)}.tmp")
    fps, clips, written = manifest["fps"], [], []
    try:
        for _, count, panels in shots(plan, manifest):
            name = f"shot{panels[0]['shot']:02d}.mov"
            part = (media.from_rgb8(f) for f in itertools.islice(frames, count))
            media.write_prores(tmp / name, part, fps, "422hq")
            written.append(folder / name)
        if folder.exists() and overwrite:
            shutil.rmtree(folder)
        os.replace(tmp, folder)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    for movie, (_, count, panels) in zip(written, shots(plan, manifest), strict=True):
        shot = panels[0]["shot"]
        metadata = {
            "shot": shot,
            "frames": count,
            "panels": [p["number"] for p in panels],
            "prompts": [p.get("prompt") for p in panels],
            "seeds": [p.get("seed") for p in panels],
        }
        clips.append(_clip(f"shot{shot:02d}", movie, count, fps, metadata))
    timeline = _timeline(manifest.get("title") or path.stem, clips, fps)
    return [write_timeline(timeline, path, overwrite=overwrite), *written]
