"""Captioned image and video records of a training source, checked as they are read.

A source is any of: a dataset folder written by `animatic dataset` (clips.jsonl / stills.jsonl),
a JSONL or CSV manifest with path and caption columns (paths relative to the manifest), a folder
with a metadata.jsonl / metadata.csv, a folder of media files each with a `name.txt` caption, or
a folder of tar shards from `animatic shard` (keyframe.shards).
"""

from __future__ import annotations

import csv
import json
from collections.abc import Sequence
from pathlib import Path

from keyframe.errors import UserError
from keyframe.frames import media_kind, video_info
from keyframe.shards import is_sharded, read_index

MANIFESTS = ("clips.jsonl", "stills.jsonl")  # written by `animatic dataset`
METADATA = ("metadata.jsonl", "metadata.csv")  # the Hugging Face imagefolder convention
PATH_KEYS = ("path", "file_name")
CAPTION_KEYS = ("caption", "text")
DEFAULT_FPS = 24.0  # for frame folders, which carry no frame rate


def _record(fields: dict, base: Path, where: str) -> dict:
    """Check one manifest entry and resolve its path against the manifest's folder."""
    path_key = next((k for k in PATH_KEYS if k in fields), None)
    caption_key = next((k for k in CAPTION_KEYS if k in fields), None)
    if path_key is None or caption_key is None:
        raise UserError(f"{where}: expected a 'path' and a 'caption' field, got {sorted(fields)}")
    if not isinstance(fields[path_key], str) or not isinstance(fields[caption_key], str):
        raise UserError(f"{where}: 'path' and 'caption' must be strings")
    path = (base / fields[path_key]).resolve()
    kind = media_kind(path)
    if not path.exists():
        raise UserError(f"{where}: {fields[path_key]} does not exist")
    if kind is None:
        raise UserError(f"{where}: {fields[path_key]} is not an image or video file")
    record = {k: v for k, v in fields.items() if k not in PATH_KEYS + CAPTION_KEYS}
    record.update(path=str(path), caption=fields[caption_key].strip(), kind=kind)
    if "captions" in record:
        captions = record["captions"]
        if not (
            isinstance(captions, list) and captions and all(isinstance(c, str) for c in captions)
        ):
            raise UserError(f"{where}: 'captions' must be a non-empty list of strings")
        record["captions"] = [c.strip() for c in captions]
    for key, cast in (("fps", float), ("frames", int)):
        value = record.get(key)
        try:
            record[key] = None if value in (None, "") else cast(value)
        except (TypeError, ValueError):
            raise UserError(f"{where}: {key} must be a number, got {value!r}") from None
    return record


def _read_jsonl(path: Path) -> list[dict]:
    records = []
    with path.open(encoding="utf-8") as lines:
        for number, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            where = f"{path}:{number}"
            try:
                fields = json.loads(line)
            except json.JSONDecodeError as err:
                raise UserError(f"{where}: not valid JSON ({err.msg})") from None
            if not isinstance(fields, dict):
                raise UserError(f"{where}: expected a JSON object with path and caption")
            records.append(_record(fields, path.parent, where))
    return records


def _read_csv(path: Path) -> list[dict]:
    with path.open(encoding="utf-8", newline="") as handle:
        reader = csv.DictReader(handle)
        header = [name.strip().lower() for name in reader.fieldnames or []]
        if not set(header) & set(PATH_KEYS) or not set(header) & set(CAPTION_KEYS):
            raise UserError(f"{path}:1: expected a header with 'path' and 'caption' columns")
        reader.fieldnames = header
        records = []
        for row in reader:
            where = f"{path}:{reader.line_num}"
            if None in row or None in row.values():
                raise UserError(f"{where}: expected {len(header)} columns")
            records.append(_record(row, path.parent, where))
    return records


def _read_sidecars(folder: Path) -> list[dict]:
    """Every image/video file in the folder tree, captioned by the text file with the same stem."""
    media = sorted(
        p
        for p in folder.rglob("*")
        if p.is_file()
        and not any(part.startswith(".") for part in p.relative_to(folder).parts)
        and media_kind(p) is not None
    )
    if not media:
        raise UserError(f"{folder}: no images or videos, and no manifest (clips.jsonl, metadata.*)")
    missing = [p for p in media if not p.with_suffix(".txt").is_file()]
    if missing:
        example = missing[0].relative_to(folder)
        raise UserError(
            f"{folder}: {len(missing)} of {len(media)} files have no caption; expected "
            f"{example.with_suffix('.txt')} next to {example} (or a metadata.jsonl)"
        )
    captions = [p.with_suffix(".txt") for p in media]
    return [  # paths relative to `folder`, which _record joins them to
        _record(
            {"path": str(p.relative_to(folder)), "caption": t.read_text("utf-8")}, folder, str(t)
        )
        for p, t in zip(media, captions, strict=True)
    ]


def _read_source(source: Path) -> list[dict]:
    if source.is_file():
        suffix = source.suffix.lower()
        if suffix == ".jsonl":
            return _read_jsonl(source)
        if suffix == ".csv":
            return _read_csv(source)
        raise UserError(f"{source}: expected a folder, a .jsonl or a .csv manifest")
    if not source.is_dir():
        raise UserError(f"{source}: no such file or folder")
    if is_sharded(source):
        return read_index(source)
    manifests = [source / name for name in MANIFESTS if (source / name).is_file()]
    if not manifests:
        manifests = [source / name for name in METADATA if (source / name).is_file()][:1]
    if manifests:
        return [r for m in manifests for r in _read_source(m)]
    return _read_sidecars(source)


def load_records(source: str | Path, kind: str | None = None) -> list[dict]:
    """Records {path (absolute), caption, kind, fps, frames, ...extra fields} of a source.

    kind "image" or "video" keeps only that kind; a source without any is a UserError.
    """
    if kind not in (None, "image", "video"):
        raise ValueError(f"kind must be 'image', 'video' or None, not {kind!r}")
    records = _read_source(Path(source).expanduser())
    if kind is None:
        return records
    chosen = [r for r in records if r["kind"] == kind]
    if not chosen:
        raise UserError(f"{source}: no {kind}s found ({len(records)} other files)")
    return chosen


def _given_records(source: str | Path | Sequence[dict]) -> list[dict] | None:
    """A list of records passed in directly (e.g. one side of a split), else None."""
    return None if isinstance(source, (str, Path)) else list(source)


def image_records(source: str | Path | Sequence[dict]) -> list[dict]:
    """The images of a source, or its videos (to sample frames from) when it has no images."""
    records = _given_records(source)
    records = load_records(source) if records is None else records
    images = [r for r in records if r["kind"] == "image"]
    return images or [r for r in records if r["kind"] == "video"]


def clip_records(source: str | Path | Sequence[dict]) -> list[dict]:
    """The videos of a source (or of records passed in)."""
    records = _given_records(source)
    if records is None:
        return load_records(source, "video")
    return [r for r in records if r["kind"] == "video"]


def with_video_info(record: dict) -> dict:
    """Fill in frames and fps from the file when the manifest did not give them."""
    if record.get("frames") is None or record.get("fps") is None:
        frames, fps = video_info(record["path"])
        record = {**record, "frames": record.get("frames") or frames}
        record["fps"] = record.get("fps") or fps or DEFAULT_FPS
    return record
