"""Cached latents: built once per (autoencoder, records, settings), equal to encoding on the fly,
reused when nothing changed, rebuilt when something did, and used by both stages' training; a
folder of shards (one per data shard), resumed after a kill to the same bytes, read lazily."""

from __future__ import annotations

import json
import os

import pytest
import torch
from safetensors import safe_open

from keyframe import latents_shards
from keyframe.autoencoder import FrameAutoencoder
from keyframe.autoencoder_files import save_autoencoder
from keyframe.data import ClipDataModule, ImageDataModule
from keyframe.errors import UserError
from pipeline.cli import main


def _ae(seed: int = 0) -> FrameAutoencoder:
    torch.manual_seed(seed)
    ae = FrameAutoencoder(3, 4, base_channels=8, channel_mult=[1, 2], num_res_blocks=1)
    ae.scale_factor, ae.shift = 0.8, 0.1
    return ae.eval()


def _stored(cache, name: str = "latents") -> torch.Tensor:
    """Every record's latents from a cache folder, in record order."""
    index = json.loads((cache / "index.json").read_text())
    rows = {}
    for shard in index["shards"]:
        with safe_open(str(cache / shard["file"]), "pt") as f:
            numbers = [n for a, b in shard["records"] for n in range(a, b)]
            rows.update(zip(numbers, f.get_tensor(name), strict=True))
    return torch.stack([rows[n] for n in range(index["count"])])


def _files(folder) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


@pytest.mark.slow
def test_image_cache_equals_encoding_and_is_reused_until_something_changes(
    tiny_shapes, tmp_path, capsys
):
    path, ae = tmp_path / "stills", _ae()
    dm = ImageDataModule(str(tiny_shapes), size=16, batch_size=5, flip=True, latents=str(path))
    dm.use_latents(ae)
    records = dm.train_set.captions
    assert len(records) == len(dm.train_set) and (path / "index.json").is_file()
    plain = ImageDataModule(str(tiny_shapes), size=16, batch_size=5)
    plain.setup()
    stored, mirrored = _stored(path), _stored(path, "mirrored")
    assert stored.dtype == torch.float16 and len(stored) == len(records)
    for i in (0, len(records) - 1):
        image = plain.train_set[i]["image"][None]
        with torch.no_grad():
            torch.testing.assert_close(stored[i].float(), ae.encode(image)[0], atol=2e-3, rtol=2e-3)
            torch.testing.assert_close(
                mirrored[i].float(), ae.encode(image.flip(-1))[0], atol=2e-3, rtol=2e-3
            )
    # Items: latents (or their mirror with the mirrored caption), never images.
    item = dm.train_set[0]
    assert set(item) == {"latent", "caption"} and item["latent"].shape == (4, 8, 8)
    # Same autoencoder and data: reused as is. Another autoencoder: rebuilt, and it says why.
    shard = path / "latents-000000.safetensors"
    stamp = os.stat(shard).st_mtime_ns
    ImageDataModule(str(tiny_shapes), 16, flip=True, latents=str(path)).use_latents(ae)
    assert os.stat(shard).st_mtime_ns == stamp
    ImageDataModule(str(tiny_shapes), 16, flip=True, latents=str(path)).use_latents(_ae(1))
    assert "stale (autoencoder changed)" in capsys.readouterr().out
    assert os.stat(shard).st_mtime_ns != stamp


def test_what_is_not_a_cache_folder_is_never_written(tiny_shapes, tmp_path):
    def build(path):
        ImageDataModule(str(tiny_shapes), 16, latents=str(path)).use_latents(_ae())

    mine = tmp_path / "mine.safetensors"
    mine.write_text("my notes")
    with pytest.raises(UserError, match="is a file, not a latent cache folder"):
        build(mine)
    notes = tmp_path / "notes"
    notes.mkdir()
    (notes / "todo.txt").write_text("keep me")
    with pytest.raises(UserError, match="not a latent cache folder"):
        build(notes)
    # A single-file cache of the previous version: one line saying what to do, kept as it is.
    from safetensors.torch import save_file

    old = tmp_path / "old.safetensors"
    save_file({"latents": torch.zeros(1)}, str(old), metadata={"format": "animatic-latents-1"})
    before = old.read_bytes()
    with pytest.raises(UserError, match="single-file latent cache of an older version; delete"):
        build(old)
    assert old.read_bytes() == before and mine.read_text() == "my notes"
    assert sorted(p.name for p in notes.iterdir()) == ["todo.txt"]


def test_clip_cache_cuts_the_same_windows_as_the_videos(tiny_shapes, tmp_path):
    ae = _ae()
    args = dict(num_frames=5, size=16, strides=(1, 2), seed=3, val_fraction=0.0)
    cached = ClipDataModule(str(tiny_shapes), **args, latents=str(tmp_path / "clips"))
    cached.use_latents(ae)
    plain = ClipDataModule(str(tiny_shapes), **args)
    plain.setup()
    # Fixed draws (a seeded dataset) so both pick the same start and stride.
    cached.train_set.clips.seed = plain.train_set.seed = 7
    for i in range(len(plain.train_set)):
        video, item = plain.train_set[i], cached.train_set[i]
        assert (item["fps"], item["stride"]) == (video["fps"], video["stride"])
        with torch.no_grad():
            expected = ae.encode(video["video"][None])[0]
        torch.testing.assert_close(item["latent"], expected, atol=2e-3, rtol=2e-3)


@pytest.mark.slow
@pytest.mark.parametrize("stage", ["keyframe", "interpolate"])
def test_training_runs_on_cached_latents(stage, tiny_shapes, tmp_path, one_thread):
    ae_dir = save_autoencoder(_ae(), tmp_path / "ae")
    cache = tmp_path / "cache"
    argv = [
        "train", stage, "fit", "--config", f"configs/{stage}/tiny.yaml",
        "--data.data", str(tiny_shapes), "--data.size", "16", "--data.latents", str(cache),
        "--model.autoencoder", str(ae_dir), "--trainer.fast_dev_run", "true",
        "--trainer.default_root_dir", str(tmp_path), "--trainer.enable_progress_bar", "false",
    ]  # fmt: skip
    assert main(argv) == 0
    index = json.loads((cache / "index.json").read_text())
    assert index["complete"] and index["identity"]["size"] == "16"


@pytest.fixture(scope="module")
def shards(tiny_shapes, tmp_path_factory):
    """tiny_shapes in tar shards of 7: clips and 3 stills, then 7, 7 and 7 stills."""
    out = tmp_path_factory.mktemp("shards") / "sh"
    assert main(["shard", str(tiny_shapes), "--out", str(out), "--per-shard", "7"]) == 0
    return out


def _image_cache(data, path, ae, **args) -> ImageDataModule:
    dm = ImageDataModule(str(data), size=16, batch_size=8, val_fraction=0.0, latents=str(path))
    dm.use_latents(ae, **args)
    return dm


def test_a_sharded_dataset_gets_one_cache_shard_per_data_shard(tiny_shapes, shards, tmp_path):
    ae = _ae()
    from_shards = _image_cache(shards, tmp_path / "a", ae)
    from_files = _image_cache(tiny_shapes, tmp_path / "b", ae)
    names = sorted(p.name for p in (tmp_path / "a").glob("*.safetensors"))
    assert names == [f"latents-{i:06d}.safetensors" for i in range(4)]
    index = json.loads((tmp_path / "a" / "index.json").read_text())
    assert [s["count"] for s in index["shards"]] == [3, 7, 7, 7] and index["count"] == 24
    assert from_shards.train_set.captions == from_files.train_set.captions
    torch.testing.assert_close(_stored(tmp_path / "a"), _stored(tmp_path / "b"), atol=0, rtol=0)
    # Plain files: PER_SHARD records to a shard (24 here: one shard).
    assert sorted(p.name for p in (tmp_path / "b").glob("*.safetensors")) == [
        "latents-000000.safetensors"
    ]


@pytest.mark.slow
def test_a_killed_build_resumes_and_ends_with_the_same_bytes(shards, tmp_path, capsys):
    ae = _ae()
    whole = tmp_path / "whole"
    _image_cache(shards, whole, ae)
    calls, encode = [], ae.encode

    def encode_until_killed(images):
        calls.append(len(images))
        if len(calls) == 3:  # one batch per shard: killed while encoding the third shard
            raise KeyboardInterrupt
        return encode(images)

    part = tmp_path / "part"
    ae.encode = encode_until_killed
    with pytest.raises(KeyboardInterrupt):
        _image_cache(shards, part, ae)
    assert sorted(p.name for p in part.iterdir()) == [
        "index.json", "latents-000000.safetensors", "latents-000001.safetensors",
    ]  # fmt: skip
    assert not json.loads((part / "index.json").read_text())["complete"]
    # The same command again: only the two missing shards are encoded (and what a kill -9 left
    # half-written is cleared away).
    (part / ".latents-000002.0badf00d.tmp.safetensors").write_bytes(b"half a shard")
    calls.clear()
    _image_cache(shards, part, ae)
    assert calls == [7, 7] and "resuming, 2/4 shards to build" in capsys.readouterr().out
    assert _files(part) == _files(whole)
    # A damaged shard (here truncated) is rebuilt on its own, to the same bytes.
    damaged = part / "latents-000002.safetensors"
    damaged.write_bytes(damaged.read_bytes()[:-10])
    calls.clear()
    _image_cache(shards, part, ae)
    assert calls == [7] and _files(part) == _files(whole)
    # Nothing to do: nothing encoded, nothing written.
    stamps = {p.name: os.stat(p).st_mtime_ns for p in part.iterdir()}
    calls.clear()
    _image_cache(shards, part, ae)
    assert calls == [] and stamps == {p.name: os.stat(p).st_mtime_ns for p in part.iterdir()}


def test_the_dataset_reads_the_index_and_opens_a_shard_when_first_needed(
    shards, tmp_path, monkeypatch
):
    dm = _image_cache(shards, tmp_path / "c", _ae())
    opened = []

    def counting_open(path, framework):
        opened.append(os.path.basename(path))
        return safe_open(path, framework)

    monkeypatch.setattr(latents_shards, "safe_open", counting_open)
    dataset = dm.train_set.__class__(tmp_path / "c", dm.train_set.captions, False, seed=0)
    assert opened == []  # construction reads index.json only
    first = [dataset[i]["latent"] for i in (0, 1, 2)]  # data shard 0's stills
    assert opened == ["latents-000000.safetensors"]
    last = dataset[23]["latent"]
    assert opened == ["latents-000000.safetensors", "latents-000003.safetensors"]
    stored = _stored(tmp_path / "c").float()
    assert all(torch.equal(a, b) for a, b in zip(first, stored[:3], strict=True))
    assert torch.equal(last, stored[23])
