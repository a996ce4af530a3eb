"""The latents cache on disk: a folder of safetensors shards and an index, built shard by shard.

PATH/index.json holds the cache's identity (format, autoencoder, records, settings), which records
each shard holds (record number -> shard file and row) and the counts. PATH/latents-NNNNNN
.safetensors hold the fp16 latents, each stamped with what it was made from (its records'
fingerprint and the settings). Records from tar shards (keyframe.shards) are cached one file per
data shard, others `PER_SHARD` to a file. Every shard is written atomically, so a build killed
part-way resumes with the same command at the shards that are missing or damaged, and ends with
the same bytes as an uninterrupted build. Readers read the index only, and open a shard when an
item in it is first read.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path

import numpy as np
import torch
from safetensors import safe_open

from keyframe.errors import UserError
from keyframe.files import atomic_write
from keyframe.shards import shard_groups

FORMAT = "animatic-latents-2"
OLD_FORMAT = "animatic-latents-1"  # one safetensors file holding every latent
INDEX = "index.json"
PER_SHARD = 1000  # records per cache shard when the data is not in tar shards
OPEN_SHARDS = 64  # shard files a reader keeps open (per data-loader worker)
STAMP = "animatic"  # the one metadata key of a shard (one key, so a rerun writes the same bytes)


def _where(record: dict) -> str:
    """A record's file, and its member for a sample inside a shard."""
    path = str(record["path"])
    return f"{path}:{record['member']}" if "member" in record else path


def records_fingerprint(records: Sequence[dict]) -> str:
    """A short hash of the records' paths, captions and frame counts."""
    keys = [(_where(r), r.get("caption", ""), r.get("frames")) for r in records]
    return hashlib.sha256(json.dumps(keys).encode()).hexdigest()[:16]


def shard_file(index: int) -> str:
    return f"latents-{index:06d}.safetensors"


def plan_shards(records: Sequence[dict], per_shard: int = PER_SHARD) -> dict[int, list[int]]:
    """Record numbers per cache shard number: shard i holds the records of data shard i (tar
    `shard-00000i.tar`) when every record is a tar member, else `per_shard` consecutive records."""
    if not (records and all("member" in r for r in records)):
        starts = range(0, len(records), per_shard)
        return {i: list(range(a, min(a + per_shard, len(records)))) for i, a in enumerate(starts)}
    groups = shard_groups(records)
    found = [re.fullmatch(r"shard-(\d+)\.tar", name) for name in groups]
    numbers = [int(m.group(1)) for m in found if m]
    if len(set(numbers)) != len(groups):  # tars not named by `animatic shard`: count them
        numbers = list(range(len(groups)))
    return dict(zip(numbers, groups.values(), strict=True))


def _runs(numbers: Sequence[int]) -> list[list[int]]:
    """[start, stop) runs of consecutive record numbers: a shard's part of the index, compactly."""
    runs: list[list[int]] = []
    for n in numbers:
        if runs and runs[-1][1] == n:
            runs[-1][1] += 1
        else:
            runs.append([n, n + 1])
    return runs


def _stamp(path: Path) -> dict | None:
    """A shard's stamp, or None if it is missing, damaged or not a shard."""
    try:
        with safe_open(str(path), "pt") as f:
            return json.loads((f.metadata() or {})[STAMP])
    except Exception:
        return None


def _read_json(path: Path) -> dict | None:
    try:
        found = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return found if isinstance(found, dict) else None


def _check_place(path: Path) -> dict | None:
    """The index of the cache at `path`, None where there is none yet; a UserError where `path`
    holds something else (never overwritten)."""
    if path.is_file():
        with open(path, "rb") as f:
            head = f.read(4096)
        if OLD_FORMAT.encode() in head:
            raise UserError(
                f"data.latents: {path} is a single-file latent cache of an older version; "
                "delete it or point data.latents at a new folder"
            )
        raise UserError(
            f"data.latents: {path} is a file, not a latent cache folder; pick a new path"
        )
    if not path.exists():
        return None
    index = _read_json(path / INDEX)
    if index is not None and index.get("format") == FORMAT:
        return index
    if (path / INDEX).exists() or any(path.iterdir()):
        raise UserError(
            f"data.latents: {path} is not a latent cache folder (no {INDEX} of ours); "
            "pick a new or empty folder"
        )
    return None


def _report(path: Path, index: dict | None, identity: dict, todo: int, total: int) -> None:
    if index is None:
        return
    if index.get("identity") != identity:
        found = index.get("identity", {})
        changed = ", ".join(sorted(k for k in identity if found.get(k) != identity[k]))
        print(
            f"data.latents: {path} is stale ({changed} changed); rebuilding {todo}/{total} shards"
        )
    else:
        print(f"data.latents: {path}: resuming, {todo}/{total} shards to build")


def ensure_cache(
    path: str | Path,
    identity: dict[str, str],
    records: Sequence[dict],
    encode: Callable[[list[list[int]]], Iterable[dict[str, torch.Tensor]]],
    per_shard: int = PER_SHARD,
    verbose: bool = True,
) -> Path:
    """The cache folder at `path` for these records, reused if its identity matches, else built:
    `encode(groups)` yields each group's tensors in order, and only the shards that are missing,
    damaged or stale are encoded (so a killed build resumes where it stopped)."""
    from safetensors.torch import save_file

    # 1. what is there, and what it should be: the index, and each shard's stamp
    path = Path(path)
    found = _check_place(path)
    groups = plan_shards(records, per_shard)
    shared = {k: v for k, v in identity.items() if k != "records"}
    stamps = {
        i: {**shared, "shard": i, "records": records_fingerprint([records[n] for n in g])}
        for i, g in groups.items()
    }
    index = {"format": FORMAT, "identity": identity, "complete": False, "count": len(records)}
    index["shards"] = [
        {"file": shard_file(i), "count": len(g), "records": _runs(g)} for i, g in groups.items()
    ]
    # 2. shard headers only (no tensor is read): missing, damaged and stale ones are rebuilt
    todo = [i for i, stamp in stamps.items() if _stamp(path / shard_file(i)) != stamp]
    if not todo and found == {**index, "complete": True}:
        return path
    if verbose:
        _report(path, found, identity, len(todo), len(groups))
    _write_index(path, index)  # unfinished until every shard is in place
    # 3. encode and write the shards to do, each atomically
    for i, tensors in zip(todo, encode([groups[i] for i in todo]), strict=True):
        metadata = {STAMP: json.dumps(stamps[i], sort_keys=True)}
        atomic_write(path / shard_file(i), lambda tmp, t=tensors, m=metadata: save_file(t, tmp, m))
    # 4. drop shards of ours the new layout has no use for; the index says it is complete
    _remove_unused(path, {s["file"] for s in index["shards"]})
    _write_index(path, {**index, "complete": True})
    return path


def _write_index(path: Path, index: dict) -> None:
    path.mkdir(parents=True, exist_ok=True)
    text = json.dumps(index, indent=1, sort_keys=True) + "\n"
    atomic_write(path / INDEX, lambda tmp: tmp.write_text(text))


def _remove_unused(path: Path, used: set[str]) -> None:
    """Delete shard files of an earlier, larger layout (only files stamped as ours) and the temp
    files of builds that were killed (kill -9) while writing."""
    for file in sorted(path.glob("latents-*.safetensors")):
        if file.name not in used and (_stamp(file) or {}).get("format") == FORMAT:
            os.remove(file)
    for file in [*path.glob(".latents-*.tmp.safetensors"), *path.glob(".index.*.tmp.json")]:
        file.unlink(missing_ok=True)


def batches_by_shard(groups: Sequence[Sequence[int]], batch_size: int) -> tuple[list, list[int]]:
    """Batches of record numbers that never cross a shard (so a shard's latents do not depend on
    which shards were built with it), and the shard each batch belongs to."""
    batches, owners = [], []
    for shard, group in enumerate(groups):
        for i in range(0, len(group), batch_size):
            batches.append(list(group[i : i + batch_size]))
            owners.append(shard)
    return batches, owners


def per_shard(outputs: Iterable[dict[str, torch.Tensor]], owners: Sequence[int]) -> Iterator[dict]:
    """Concatenate each shard's batch outputs ({name: tensor}); yield one dict per shard."""
    parts: dict[str, list[torch.Tensor]] = {}
    for k, (shard, out) in enumerate(zip(owners, outputs, strict=True)):
        for name, value in out.items():
            parts.setdefault(name, []).append(value)
        if k + 1 == len(owners) or owners[k + 1] != shard:
            yield {name: torch.cat(values).contiguous() for name, values in parts.items()}
            parts = {}


class ShardReader:
    """Reads one record's latents out of the cache folder: the index at construction, a shard
    file when first needed (kept open, at most OPEN_SHARDS per process)."""

    def __init__(self, path: str | Path, expected: int):
        self.path = Path(path)
        index = _read_json(self.path / INDEX)
        if index is None or index.get("format") != FORMAT or not index.get("complete"):
            raise UserError(f"data.latents: {self.path}: no complete latent cache; rebuild it")
        if index["count"] != expected:
            raise UserError(
                f"data.latents: {self.path} holds {index['count']} records, expected {expected}"
            )
        self.identity, self.files = index["identity"], [s["file"] for s in index["shards"]]
        self.shard_of = np.zeros(expected, dtype=np.int32)
        self.row_of = np.zeros(expected, dtype=np.int64)
        for shard, entry in enumerate(index["shards"]):
            numbers = np.concatenate([np.arange(a, b) for a, b in entry["records"]] or [[]])
            self.shard_of[numbers.astype(np.int64)] = shard
            self.row_of[numbers.astype(np.int64)] = np.arange(len(numbers))
        self._open: OrderedDict[int, object] = OrderedDict()

    def locate(self, number: int) -> tuple[object, int]:
        """(the open shard file, the record's row in it)."""
        shard = int(self.shard_of[number])
        if shard in self._open:
            self._open.move_to_end(shard)
        else:
            if len(self._open) >= OPEN_SHARDS:
                self._open.popitem(last=False)
            file = self.path / self.files[shard]
            try:
                self._open[shard] = safe_open(str(file), "pt")
            except Exception as err:
                raise UserError(f"data.latents: {file}: unreadable ({err}); rebuild it") from None
        return self._open[shard], int(self.row_of[number])

    def __getstate__(self) -> dict:  # open files stay behind when sent to a worker process
        return {**self.__dict__, "_open": OrderedDict()}
