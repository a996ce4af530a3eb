"""`animatic dataset shapes`: layout, lossless video, determinism, resume, refusals, bad input."""

import json

import cv2
import numpy as np
import pytest

import pipeline.dataset as dataset
from pipeline.cli import main
from pipeline.shapes import clip_centres, parse_caption, render_clip, render_still

SMALL = ["--clips", "8", "--stills", "18", "--size", "32", "--frames", "12", "--seed", "3"]


def make(out, *extra):
    return main(["dataset", "shapes", "--out", str(out), *SMALL, *extra])


def snapshot(folder):
    """Every file under a folder (relative path -> bytes)."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    out = tmp_path_factory.mktemp("ref") / "shapes"
    assert make(out) == 0
    return out


def read_all(path):
    capture = cv2.VideoCapture(str(path))
    frames = []
    while True:
        ok, frame = capture.read()
        if not ok:
            return np.stack(frames)
        frames.append(cv2.cvtColor(frame, cv2.COLOR_BGR2RGB))


def test_layout_and_manifests(reference):
    info = json.loads((reference / "dataset.json").read_text())
    assert info["complete"] and info["params"]["seed"] == 3 and info["params"]["size"] == 32
    clips = [json.loads(line) for line in (reference / "clips.jsonl").read_text().splitlines()]
    stills = [json.loads(line) for line in (reference / "stills.jsonl").read_text().splitlines()]
    assert len(clips) == 8 and len(stills) == 18
    for record in clips:
        assert (reference / record["path"]).is_file()
        assert record["fps"] == 24.0 and record["frames"] == 12
        assert parse_caption(record["caption"]).kind == "clip"
        for obj in record["objects"]:
            assert {"shape", "colour", "size", "centres"} <= set(obj)
            assert len(obj["centres"]) == 12
    for record in stills:
        assert (reference / record["path"]).is_file()
        assert parse_caption(record["caption"]).kind == "still"
    # The first object of still i is in cell i % 9: every position is covered.
    firsts = [s["objects"][0]["position"] for s in stills]
    assert firsts[:9] == [
        "top left",
        "top",
        "top right",
        "left",
        "center",
        "right",
        "bottom left",
        "bottom",
        "bottom right",
    ]


def test_video_is_lossless_and_matches_the_ground_truth(reference):
    params = json.loads((reference / "dataset.json").read_text())["params"]
    for index, line in enumerate((reference / "clips.jsonl").read_text().splitlines()):
        record = json.loads(line)
        scene = dataset.clip_scene(params, index)
        frames = read_all(reference / record["path"])
        assert np.array_equal(frames, render_clip(scene, 32, 12))  # exact colours survive
        truth = np.array([obj["centres"] for obj in record["objects"]]).transpose(1, 0, 2)
        assert np.abs(truth - clip_centres(scene, 12)).max() < 1e-6
    record = json.loads((reference / "stills.jsonl").read_text().splitlines()[5])
    image = cv2.cvtColor(cv2.imread(str(reference / record["path"])), cv2.COLOR_BGR2RGB)
    assert np.array_equal(image, render_still(dataset.still_scene(params, 5), 32))


def test_same_seed_same_bytes_with_any_number_of_workers(reference, tmp_path, capsys):
    assert make(tmp_path / "w2", "--workers", "2") == 0
    assert snapshot(tmp_path / "w2") == snapshot(reference)
    assert "clips/s" in capsys.readouterr().out
    assert make(tmp_path / "other", "--seed", "4") == 0
    assert snapshot(tmp_path / "other") != snapshot(reference)


def test_resume_after_losing_the_last_clip(reference, tmp_path, capsys):
    out = tmp_path / "shapes"
    assert make(out) == 0
    (out / "clips" / "000007.avi").unlink()
    (out / "clips.jsonl").unlink()
    assert make(out) == 0
    assert snapshot(out) == snapshot(reference)
    assert "clips: 1 written" in capsys.readouterr().out


def test_resume_after_an_interrupted_run(reference, tmp_path, monkeypatch, capsys):
    out = tmp_path / "shapes"
    real, calls = dataset.render_clip, []

    def interrupted(*args, **kwargs):
        calls.append(1)
        if len(calls) == 4:
            (out / "clips" / ".tmp-000003.999.avi").write_bytes(b"half a video")
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(dataset, "render_clip", interrupted)
    assert make(out) == 130
    assert not json.loads((out / "dataset.json").read_text())["complete"]
    assert len(list((out / "clips").glob("*.avi"))) == 4  # 3 done + a stale temporary
    monkeypatch.setattr(dataset, "render_clip", real)
    assert make(out) == 0
    assert snapshot(out) == snapshot(reference)
    assert "clips: 5 written" in capsys.readouterr().out


def last_error_line(capsys):
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1, lines
    return lines[0]


def test_refuses_a_foreign_non_empty_folder(tmp_path, capsys):
    (tmp_path / "notes.txt").write_text("mine")
    assert make(tmp_path) == 2
    error = last_error_line(capsys)
    assert "not empty" in error and str(tmp_path) in error
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt"]


def test_refuses_to_resume_with_other_parameters(reference, tmp_path, capsys):
    out = tmp_path / "shapes"
    assert make(out) == 0
    capsys.readouterr()
    assert main(["dataset", "shapes", "--out", str(out), *SMALL[:-1], "9"]) == 2
    assert "seed 3 (asked 9)" in last_error_line(capsys)
    assert snapshot(out) == snapshot(reference)


@pytest.mark.parametrize(
    "argv, words",
    [
        (["cubes"], "unknown world 'cubes'"),
        (["shapes", "--size", "8"], "--size 8"),
        (["shapes", "--frames", "1"], "--frames 1"),
        (["shapes", "--workers", "0"], "--workers 0"),
        (["shapes", "--max-objects", "3"], "--max-objects 3"),
        (["shapes", "--clips", "-1"], "--clips -1"),
    ],
)
def test_bad_values_get_one_line_errors(argv, words, tmp_path, capsys):
    assert main(["dataset", *argv, "--out", str(tmp_path / "d")]) == 2
    assert words in last_error_line(capsys)
    assert not (tmp_path / "d").exists()


def test_unwritable_output_gets_a_one_line_error(tmp_path, capsys):
    blocker = tmp_path / "file.txt"
    blocker.write_text("x")
    assert make(blocker / "sub") == 2
    assert "cannot write" in last_error_line(capsys)
    assert make(blocker) == 2
    assert "not a folder" in last_error_line(capsys)


def test_malformed_numbers_are_rejected_by_the_parser(tmp_path, capsys):
    try:
        code = main(["dataset", "shapes", "--out", str(tmp_path), "--size", "big"])
    except SystemExit as exit_:  # argparse's own exit, until the CLI turns it into a return
        code = exit_.code
    assert code == 2
    assert "--size" in capsys.readouterr().err.strip().splitlines()[-1]
