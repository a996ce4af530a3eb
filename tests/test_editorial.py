"""Handing a film to an editor: `render --out cut.otio / .edl / .xml` (one ProRes file per shot,
one clip per shot), read back with OpenTimelineIO; and a .mov film."""

from __future__ import annotations

import json
from pathlib import Path

import av
import opentimelineio as otio
import pytest

from pipeline.cli import main
from pipeline.editorial import shots
from pipeline.storyboard_manifest import load_storyboard, plan_from_manifest

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "shapes_film.yaml"
MODELS = ["--keyframe-model", "oracle", "--tween-model", "crossfade", "--quiet"]


def _frames(path: Path) -> int:
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        assert stream.codec_context.name == "prores" and stream.codec_context.profile == "HQ"
        return sum(1 for _ in container.decode(stream))


@pytest.fixture(scope="module")
def board(tmp_path_factory):
    folder = tmp_path_factory.mktemp("film") / "board"
    assert main(["storyboard", str(EXAMPLE), "--out", str(folder), *MODELS[:2], "--quiet"]) == 0
    return folder


@pytest.mark.parametrize("suffix", [".otio", ".edl", ".xml"])
def test_a_cut_reads_back_with_the_films_shots_and_durations(board, tmp_path, suffix):
    cut = tmp_path / f"cut{suffix}"
    assert main(["render", str(board), "--out", str(cut), *MODELS]) == 0
    manifest = load_storyboard(board).manifest
    plan = plan_from_manifest(manifest)
    expected = [count for _, count, _ in shots(plan, manifest)]
    assert expected == [108, 60] and sum(expected) == plan.num_frames == 168  # 2 shots
    timeline = otio.adapters.read_from_file(str(cut), rate=24) if suffix == ".edl" else None
    timeline = timeline or otio.adapters.read_from_file(str(cut))
    clips = list(timeline.find_clips())
    assert [c.name for c in clips] == ["shot01", "shot02"]
    assert [c.duration().value for c in clips] == expected
    assert {c.duration().rate for c in clips} == {24.0}
    assert timeline.duration().value == plan.num_frames
    media = sorted((tmp_path / "cut_media").iterdir())
    assert [m.name for m in media] == ["shot01.mov", "shot02.mov"]
    assert [_frames(m) for m in media] == expected  # each shot's own rendered frames
    if suffix == ".otio":
        assert clips[0].media_reference.target_url == media[0].resolve().as_uri()
        assert list(clips[1].metadata["animatic"]["panels"]) == [4, 5]
    record = json.loads((tmp_path / f"cut{suffix}.json").read_text())
    assert record["num_frames"] == 168
    # Not replaced without --overwrite (checked before any rendering), replaced with it.
    assert main(["render", str(board), "--out", str(cut), *MODELS]) == 2
    assert main(["render", str(board), "--out", str(cut), *MODELS, "--overwrite"]) == 0


def test_render_to_prores_mov(board, tmp_path):
    out = tmp_path / "film.mov"
    assert main(["render", str(board), "--out", str(out), *MODELS]) == 0
    assert _frames(out) == 168
