"""Tar shards for large corpora: many clips and stills in a few big files, each with its index.

`animatic shard SOURCE --out DIR` packs a source's media into DIR/shard-000000.tar, ... in the
webdataset layout (members KEY.EXT with the media bytes and KEY.json with the caption), and next
to each tar a shard-000000.jsonl: one line per sample with the byte offset and size of its media
inside the tar, its caption, kind, frames and fps. DIR/shards.json names the shards. Training
reads those few index files at start-up (no media file is opened or probed) and each sample by
seeking into its tar, so the map-style datasets, their exact-resume samplers and DDP splitting
work unchanged; a latents cache (keyframe.latents) of sharded data is sharded the same way (cache
shard i holds the latents of data shard i). Tools that stream (webdataset) can read the tars as
they are.
"""

from __future__ import annotations

import io
import json
import os
import tarfile
from collections.abc import Callable, Sequence
from pathlib import Path

from keyframe.errors import UserError
from keyframe.files import atomic_write

FORMAT = "animatic-shards-1"
INFO = "shards.json"
MEDIA_FIELDS = ("path", "kind")  # rebuilt when reading, not stored in the index lines


def shard_name(index: int) -> str:
    return f"shard-{index:06d}.tar"


def is_sharded(folder: str | Path) -> bool:
    """Whether a folder holds `animatic shard` output."""
    return (Path(folder) / INFO).is_file()


class Member(io.BytesIO):
    """One sample's media bytes, named `shard-000003.tar:000000042.png` in messages."""

    def __init__(self, data: bytes, name: str):
        super().__init__(data)
        self.name = name

    def __str__(self) -> str:
        return self.name


def media(record: dict) -> Path | Member:
    """What to decode for a record: its file, or its bytes read out of its shard."""
    if "member" not in record:
        return Path(record["path"])
    name = f"{Path(record['path']).name}:{record['member']}"
    try:
        with open(record["path"], "rb") as f:
            f.seek(record["offset"])
            data = f.read(record["size"])
    except OSError as err:
        raise UserError(f"{name}: cannot read ({err.strerror or err})") from None
    if len(data) != record["size"]:
        raise UserError(f"{name}: the shard is shorter than its index says (truncated?)")
    return Member(data, name)


# ---------------------------------------------------------------- writing


def _index_line(record: dict, member: str, offset: int, size: int) -> dict:
    extra = {k: v for k, v in record.items() if k not in MEDIA_FIELDS}
    return {"member": member, "offset": offset, "size": size, "kind": record["kind"], **extra}


def _add(tar: tarfile.TarFile, name: str, data: bytes) -> int:
    """Add a member with fixed metadata (so a rerun writes the same bytes); its data offset."""
    info = tarfile.TarInfo(name)
    info.size, info.mtime, info.mode = len(data), 0, 0o644
    header = len(info.tobuf(tar.format, tar.encoding, tar.errors))
    start = tar.offset
    tar.addfile(info, io.BytesIO(data))
    return start + header


def pack_shard(records: Sequence[dict], first: int, path: Path) -> list[dict]:
    """Write records (global numbers first, first + 1, ...) into the tar at `path`, atomically;
    the index lines of its samples."""
    lines: list[dict] = []

    def write(tmp: Path) -> None:
        with tarfile.open(tmp, "w", format=tarfile.USTAR_FORMAT) as tar:
            for number, record in enumerate(records, first):
                source = Path(record["path"])
                if source.is_dir():
                    raise UserError(f"{source}: a folder of frames; encode it as a video first")
                key = f"{number:09d}"
                member = key + source.suffix.lower()
                data = source.read_bytes()
                offset = _add(tar, member, data)
                line = _index_line(record, member, offset, len(data))
                _add(tar, f"{key}.json", json.dumps(line, sort_keys=True).encode())
                lines.append(line)

    atomic_write(path, write)
    return lines


def _write_jsonl(path: Path, lines: Sequence[dict]) -> None:
    text = "".join(json.dumps(line, sort_keys=True) + "\n" for line in lines)
    atomic_write(path, lambda tmp: tmp.write_text(text))


def _write_info(out: Path, info: dict) -> None:
    atomic_write(out / INFO, lambda tmp: tmp.write_text(json.dumps(info, indent=2) + "\n"))


def _start(out: Path, params: dict) -> None:
    """Make `out`, or check that the unfinished folder there was started with these settings."""
    info_path = out / INFO
    if info_path.is_file():
        found = json.loads(info_path.read_text())
        if found.get("format") != FORMAT or found.get("params") != params:
            raise UserError(
                f"--out {out}: holds shards of another source or size; pick a new folder"
            )
        return
    if out.exists() and any(out.iterdir()):
        raise UserError(f"--out {out}: exists and is not empty; pick a new folder")
    out.mkdir(parents=True, exist_ok=True)
    _write_info(out, {"format": FORMAT, "params": params, "complete": False})


def write_shards(
    records: Sequence[dict],
    out: str | Path,
    per_shard: int,
    params: dict,
    progress: Callable[[int], None] = lambda n: None,
) -> dict:
    """Pack records into shards of `per_shard` samples under `out`; shards already there (from
    an interrupted run with the same params) are kept. Returns the written shards.json."""
    out = Path(out)
    _start(out, params)
    names = []
    for index, first in enumerate(range(0, len(records), per_shard)):
        tar, lines = out / shard_name(index), out / shard_name(index).replace(".tar", ".jsonl")
        chunk = records[first : first + per_shard]
        if not (tar.is_file() and lines.is_file()):
            _write_jsonl(lines, pack_shard(chunk, first, tar))
        names.append(tar.name)
        progress(len(chunk))
    info = {"format": FORMAT, "params": params, "complete": True, "count": len(records)}
    info["shards"] = names
    _write_info(out, info)
    return info


# ---------------------------------------------------------------- reading


def read_index(folder: str | Path) -> list[dict]:
    """The records of a sharded folder: each sample's fields, with `path` its tar (absolute)."""
    folder = Path(folder).resolve()
    try:
        info = json.loads((folder / INFO).read_text())
    except (OSError, ValueError) as err:
        raise UserError(f"{folder / INFO}: not readable ({err})") from None
    if info.get("format") != FORMAT or not info.get("complete"):
        raise UserError(f"{folder}: unfinished or unknown shards; rerun `animatic shard`")
    records = []
    for name in info["shards"]:
        index = folder / name.replace(".tar", ".jsonl")
        try:
            lines = index.read_text().splitlines()
        except OSError as err:
            raise UserError(f"{index}: cannot read ({err.strerror or err})") from None
        for number, line in enumerate(lines, 1):
            try:
                fields = json.loads(line)
            except ValueError:
                raise UserError(f"{index}:{number}: not a JSON line") from None
            records.append({**fields, "path": str(folder / name)})
    if len(records) != info.get("count"):
        expected = info.get("count")
        raise UserError(f"{folder}: indexes hold {len(records)} samples, {INFO} says {expected}")
    return records


def shard_groups(records: Sequence[dict]) -> dict[str, list[int]]:
    """Record numbers grouped by shard file, in order (one latents cache file per group)."""
    groups: dict[str, list[int]] = {}
    for number, record in enumerate(records):
        groups.setdefault(os.path.basename(record["path"]), []).append(number)
    return groups
