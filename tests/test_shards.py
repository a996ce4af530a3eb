"""`animatic shard`: tar shards whose samples read back byte for byte, an index read without
opening any media, resume after an interruption, and training data identical to the source's."""

from __future__ import annotations

import json
import tarfile
from pathlib import Path

import pytest
import torch

from keyframe.datasets import ClipDataset, ImageCaptionDataset
from keyframe.errors import UserError
from keyframe.records import load_records
from keyframe.shards import media, read_index
from pipeline.cli import main


@pytest.fixture(scope="module")
def shards(tiny_shapes, tmp_path_factory):
    out = tmp_path_factory.mktemp("shards") / "sh"
    assert main(["shard", str(tiny_shapes), "--out", str(out), "--per-shard", "10"]) == 0
    return out


def test_every_sample_reads_back_byte_for_byte_with_its_caption(tiny_shapes, shards):
    source, packed = load_records(tiny_shapes), read_index(shards)
    assert len(packed) == len(source) == 28
    info = json.loads((shards / "shards.json").read_text())
    assert info["complete"] and len(info["shards"]) == 3  # 28 samples, 10 per shard
    for original, record in zip(source, packed, strict=True):
        assert media(record).getvalue() == Path(original["path"]).read_bytes()
        assert (record["caption"], record["kind"]) == (original["caption"], original["kind"])
    # The webdataset layout: KEY.EXT and KEY.json members, in order.
    with tarfile.open(shards / "shard-000000.tar") as tar:
        names = tar.getnames()
    assert names[:2] == ["000000000.avi", "000000000.json"] and len(names) == 20


def test_training_reads_the_same_pixels_from_shards_as_from_files(tiny_shapes, shards):
    assert load_records(shards) == read_index(shards)  # `--data.data DIR` takes shards
    for cls, args in ((ImageCaptionDataset, (16,)), (ClipDataset, (5, 16))):
        plain, packed = cls(str(tiny_shapes), *args, seed=3), cls(str(shards), *args, seed=3)
        assert len(plain) == len(packed)
        for i in (0, len(plain) - 1):
            a, b = plain[i], packed[i]
            key = "image" if "image" in a else "video"
            assert torch.equal(a[key], b[key]) and a["caption"] == b["caption"]


def test_an_interrupted_run_resumes_and_writes_the_same_bytes(tiny_shapes, shards, tmp_path):
    out = tmp_path / "sh"
    assert main(["shard", str(tiny_shapes), "--out", str(out), "--per-shard", "10"]) == 0
    (out / "shard-000002.jsonl").unlink()  # as if killed while packing the last shard
    (out / "shard-000001.tar").unlink()
    stamp = (out / "shard-000000.tar").stat().st_mtime_ns
    assert main(["shard", str(tiny_shapes), "--out", str(out), "--per-shard", "10"]) == 0
    assert (out / "shard-000000.tar").stat().st_mtime_ns == stamp  # kept
    for name in ("shard-000001.tar", "shard-000002.jsonl"):
        assert (out / name).read_bytes() == (shards / name).read_bytes()


def test_bad_shards_and_options_are_one_line_errors(tiny_shapes, shards, tmp_path, capsys):
    out = str(tmp_path / "sh")
    assert main(["shard", str(tiny_shapes), "--out", out, "--per-shard", "0"]) == 2
    assert main(["shard", str(tiny_shapes), "--out", out, "--per-shard", "10"]) == 0
    assert main(["shard", str(tiny_shapes), "--out", out, "--per-shard", "7"]) == 2
    assert "another source or size" in capsys.readouterr().err
    assert main(["shard", str(shards), "--out", str(tmp_path / "again")]) == 2
    # A tar cut short: the sample past the cut is one line naming the shard and member.
    records = read_index(out)
    tar = tmp_path / "sh" / "shard-000002.tar"
    tar.write_bytes(tar.read_bytes()[: records[-1]["offset"] + 10])
    with pytest.raises(UserError, match=r"shard-000002.tar:000000027.png: .*truncated"):
        media(records[-1])
