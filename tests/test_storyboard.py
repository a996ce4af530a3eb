"""`animatic storyboard`: panels, contact sheet, manifest, re-rolls, locks, no-change reruns."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import opentimelineio as otio
import pytest

from keyframe.errors import UserError
from pipeline import io
from pipeline.cli import main
from pipeline.shotlist import load_shotlist
from pipeline.storyboard_draw import fit_image
from pipeline.storyboard_manifest import MANIFEST, SHEET, load_storyboard, shot_numbers
from pipeline.storyboard_models import oracle_keyframes
from pipeline.storyboard_options import parse_panels

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "shapes_film.yaml"
ORACLE = ["--keyframe-model", "oracle", "--quiet"]
sb = sys.modules["pipeline.storyboard"]  # the package exports the function under this name

SHOTS = """\
title: tiny
size: 32
fps: 12
seed: 3
panels:
  - prompt: a large red circle at the top left on a navy background
    duration: 6
  - prompt: a large red circle at the bottom right on a navy background
    duration: 6
    transition: cut
  - prompt: a small yellow square on the left on a teal background
    duration: 6
"""


def write_shots(folder: Path, text: str = SHOTS, name: str = "shots.yaml") -> Path:
    path = folder / name
    path.write_text(text, encoding="utf-8")
    return path


def snapshot(folder: Path) -> dict[str, tuple[int, bytes]]:
    """Every file's (mtime in ns, bytes), to prove which files a run touched."""
    return {p.name: (p.stat().st_mtime_ns, p.read_bytes()) for p in sorted(folder.iterdir())}


def manifest(folder: Path) -> dict:
    return json.loads((folder / MANIFEST).read_text())


class Counting:
    """The oracle keyframe model, recording every call."""

    def __init__(self, width: int, height: int, fail_on_call: int | None = None):
        self.draw = oracle_keyframes(width, height)
        self.model_id = "oracle"
        self.check_prompt = self.draw.check_prompt
        self.calls: list[tuple[list[str], list[int], int, float]] = []
        self.fail_on_call = fail_on_call

    def __call__(self, prompts, negatives, seeds, steps, guidance):
        if self.fail_on_call is not None and len(self.calls) == self.fail_on_call:
            raise KeyboardInterrupt
        self.calls.append((list(prompts), list(seeds), steps, guidance))
        return self.draw(prompts, negatives, seeds, steps, guidance)


def test_example_storyboard_end_to_end(tmp_path):
    out = tmp_path / "board"
    assert main(["storyboard", str(EXAMPLE), "--out", str(out), *ORACLE]) == 0
    names = sorted(p.name for p in out.iterdir())
    assert names == [
        "contact_sheet.pdf",
        SHEET,
        "shot01_panel01.png",
        "shot01_panel02.png",
        "shot01_panel03.png",
        "shot02_panel04.png",  # panel 3 cuts: a new shot
        "shot02_panel05.png",
        MANIFEST,
        "storyboard.otio",
    ]
    record = manifest(out)
    shots = load_shotlist(EXAMPLE)
    assert record["complete"] and record["fps"] == 24 and record["num_frames"] == 168
    draw = oracle_keyframes(64, 64)
    for panel, entry in zip(shots.panels, record["panels"], strict=True):
        assert entry["prompt"] == panel.prompt and entry["seed"] == panel.seed
        assert entry["duration"] == panel.duration and entry["transition"] == panel.transition
        assert len(entry["input_hash"]) == 64 and entry["model"] == "oracle"
        expected = draw([panel.prompt], [""], [panel.seed], 30, 5.0)[0]
        assert np.array_equal(io.read_image(out / entry["file"]), expected)
    assert [p["key_frame"] for p in record["panels"]] == [0, 36, 60, 108, 144]
    assert record["panels"][3]["seed"] == 42
    sheet = io.read_image(out / SHEET)
    assert sheet.shape[0] > 2 * 192 and sheet.shape[1] > 3 * 192  # 3 columns, 2 rows
    assert "provenance" in record
    board = load_storyboard(out)
    assert len(board.images) == 5 and board.manifest["title"] == "Red ball, yellow box"
    # The editor's copy: one clip per panel, with its duration, prompt and image.
    timeline = otio.adapters.read_from_file(str(out / "storyboard.otio"))
    clips = list(timeline.find_clips())
    assert [c.name for c in clips] == [Path(p["file"]).stem for p in record["panels"]]
    assert [c.duration().value for c in clips] == [p.duration for p in shots.panels]
    assert {c.duration().rate for c in clips} == {24.0} and timeline.duration().value == 168
    assert clips[3].metadata["animatic"]["prompt"] == shots.panels[3].prompt
    assert clips[3].metadata["animatic"]["seed"] == 42
    assert clips[0].media_reference.target_url == (out / "shot01_panel01.png").resolve().as_uri()


def test_rerun_without_changes_regenerates_nothing(tmp_path):
    shots = write_shots(tmp_path)
    out = tmp_path / "board"
    fn = Counting(32, 32)
    first = sb.storyboard(shots, out, keyframe_model=fn, verbose=False)
    assert first.generated == (1, 2, 3) and len(fn.calls) == 1  # one batch
    before = snapshot(out)
    again = sb.storyboard(shots, out, keyframe_model=fn, verbose=False)
    assert again.generated == () and len(fn.calls) == 1
    assert snapshot(out) == before
    # A change of timing only rewrites the manifest and the sheet, never a panel.
    write_shots(tmp_path, SHOTS.removesuffix("duration: 6\n") + "duration: 9\n")
    timed = sb.storyboard(shots, out, keyframe_model=fn, verbose=False)
    assert timed.generated == () and len(fn.calls) == 1
    after = snapshot(out)
    for name in ("shot01_panel01.png", "shot01_panel02.png", "shot02_panel03.png"):
        assert after[name] == before[name]
    assert after[MANIFEST] != before[MANIFEST]


def test_changed_prompt_redraws_only_that_panel(tmp_path):
    shots = write_shots(tmp_path)
    out = tmp_path / "board"
    fn = Counting(32, 32)
    sb.storyboard(shots, out, keyframe_model=fn, verbose=False)
    before = snapshot(out)
    write_shots(tmp_path, SHOTS.replace("square on the left", "square on the right"))
    board = sb.storyboard(shots, out, keyframe_model=fn, verbose=False)
    assert board.generated == (3,)
    assert fn.calls[-1][0] == ["a small yellow square on the right on a teal background"]
    after = snapshot(out)
    assert after["shot01_panel01.png"] == before["shot01_panel01.png"]
    assert after["shot02_panel03.png"] != before["shot02_panel03.png"]


def test_reroll_touches_one_panel_only(tmp_path):
    shots = write_shots(tmp_path)
    out = tmp_path / "board"
    assert main(["storyboard", str(shots), "--out", str(out), *ORACLE]) == 0
    before = snapshot(out)
    args = ["storyboard", str(shots), "--out", str(out), "--panel", "2", "--seed", "99", *ORACLE]
    assert main(args) == 0
    after = snapshot(out)
    for name in ("shot01_panel01.png", "shot02_panel03.png"):
        assert after[name] == before[name]  # same bytes and same mtime: untouched
    assert after["shot01_panel02.png"][1] != before["shot01_panel02.png"][1]
    record = manifest(out)["panels"][1]
    assert record["seed"] == 99 and record["shotlist_seed"] == 4  # seed 3 + index 1
    expected = oracle_keyframes(32, 32)([record["prompt"]], [""], [99], 30, 5.0)[0]
    assert np.array_equal(io.read_image(out / "shot01_panel02.png"), expected)

    # The re-rolled seed is kept by later runs...
    fn = Counting(32, 32)
    assert sb.storyboard(shots, out, keyframe_model=fn, verbose=False).generated == ()
    # ...until the shot list sets that panel's seed.
    write_shots(
        tmp_path,
        SHOTS.replace(
            "duration: 6\n    transition: cut", "duration: 6\n    seed: 5\n    transition: cut"
        ),
    )
    board = sb.storyboard(shots, out, keyframe_model=fn, verbose=False)
    assert board.generated == (2,) and fn.calls[-1][1] == [5]


def test_reroll_without_seed_draws_a_new_seed(tmp_path):
    shots = write_shots(tmp_path)
    out = tmp_path / "board"
    sb.storyboard(shots, out, keyframe_model="oracle", verbose=False)
    board = sb.storyboard(shots, out, keyframe_model="oracle", reroll=[3], verbose=False)
    assert board.generated == (3,)
    assert board.panels[2]["seed"] != board.panels[2]["shotlist_seed"]


def test_locked_panels_survive_reroll_and_seed_change(tmp_path, capsys):
    shots = write_shots(tmp_path)
    out = tmp_path / "board"
    assert main(["storyboard", str(shots), "--out", str(out), "--lock", "1,3", *ORACLE]) == 0
    locked = manifest(out)["panels"]
    assert [p["locked"] for p in locked] == [True, False, True]
    before = snapshot(out)

    code = main(["storyboard", str(shots), "--out", str(out), "--panel", "3", *ORACLE])
    err = capsys.readouterr().err.strip()
    assert code == 2 and "panel 3 is locked" in err and "\n" not in err
    assert snapshot(out) == before

    # A new seed and prompt in the shot list do not change a locked panel.
    edited = SHOTS.replace("seed: 3", "seed: 11").replace("top left", "top right")
    write_shots(tmp_path, edited)
    fn = Counting(32, 32)
    board = sb.storyboard(shots, out, keyframe_model=fn, verbose=False)
    assert board.generated == (2,)  # unlocked panel 2 follows the new seed (11 + 1)
    assert fn.calls[-1][1] == [12]
    after = snapshot(out)
    assert after["shot01_panel01.png"] == before["shot01_panel01.png"]
    assert after["shot02_panel03.png"] == before["shot02_panel03.png"]
    kept = manifest(out)["panels"][0]
    assert kept["seed"] == 3 and "top left" in kept["prompt"]  # still what made the image

    board = sb.storyboard(shots, out, keyframe_model=fn, unlock="all", verbose=False)
    assert board.generated == (1, 3)
    assert not any(p["locked"] for p in manifest(out)["panels"])


def test_hand_edited_panel_is_kept_and_locked(tmp_path):
    shots = write_shots(tmp_path)
    out = tmp_path / "board"
    sb.storyboard(shots, out, keyframe_model="oracle", verbose=False)
    painted = np.full((32, 32, 3), 200, np.uint8)
    io.write_png(out / "shot01_panel01.png", painted, overwrite=True)
    write_shots(tmp_path, SHOTS.replace("seed: 3", "seed: 8"))
    board = sb.storyboard(shots, out, keyframe_model="oracle", verbose=False)
    assert board.generated == (2, 3)
    assert np.array_equal(io.read_image(out / "shot01_panel01.png"), painted)
    assert manifest(out)["panels"][0]["locked"]
    assert sb.storyboard(shots, out, keyframe_model="oracle", verbose=False).generated == ()


def test_artist_image_is_fitted_in_and_tracked(tmp_path):
    art = np.zeros((20, 40, 3), np.uint8)
    art[:, 8:32] = (250, 140, 30)  # covers the middle half: what a centre crop keeps
    io.write_png(tmp_path / "key.png", art)
    text = SHOTS.replace(
        "  - prompt: a large red circle at the bottom right on a navy background\n",
        "  - image: key.png\n",
    )
    shots = write_shots(tmp_path, text)
    out = tmp_path / "board"
    fn = Counting(32, 32)
    board = sb.storyboard(shots, out, keyframe_model=fn, verbose=False)
    assert len(fn.calls) == 1 and len(fn.calls[0][0]) == 2  # the image panel is not drawn
    panel = io.read_image(out / "shot01_panel02.png")
    assert panel.shape == (32, 32, 3)
    assert np.abs(panel.astype(int) - (250, 140, 30)).max() <= 2  # the orange middle, scaled
    assert board.panels[1]["source"] == "image" and board.panels[1]["image_sha256"]
    assert sb.storyboard(shots, out, keyframe_model=fn, verbose=False).generated == ()
    io.write_png(tmp_path / "key.png", 255 - art, overwrite=True)
    assert sb.storyboard(shots, out, keyframe_model=fn, verbose=False).generated == (2,)
    with pytest.raises(UserError, match="artist's image"):
        sb.storyboard(shots, out, keyframe_model=fn, reroll="2", verbose=False)


def test_batches_group_by_settings_and_match_single_draws(tmp_path):
    text = SHOTS.replace(
        "    duration: 6\n    transition: cut",
        "    duration: 6\n    steps: 10\n    transition: cut",
    )
    text = text.replace(
        "panels:", "panels:\n  - prompt: a medium green triangle in the center on a navy background"
    )
    shots = write_shots(tmp_path, text)
    fn = Counting(32, 32)
    board = sb.storyboard(shots, tmp_path / "board", keyframe_model=fn, batch_size=2, verbose=False)
    assert sorted(len(call[0]) for call in fn.calls) == [1, 1, 2]  # the model's: 3 panels; 10: 1
    assert {call[2] for call in fn.calls} == {None, 10}  # None: the model's own default
    single = oracle_keyframes(32, 32)
    for record, image in zip(board.panels, board.images, strict=True):
        alone = single([record["prompt"]], [""], [record["seed"]], 30, 5.0)[0]
        assert np.array_equal(image, alone)


def test_interrupted_storyboard_resumes(tmp_path):
    text = SHOTS + "  - prompt: a small blue circle at the top on a beige background\n"
    shots = write_shots(tmp_path, text)
    out = tmp_path / "board"
    with pytest.raises(KeyboardInterrupt):
        sb.storyboard(shots, out, keyframe_model=Counting(32, 32, fail_on_call=1), batch_size=2)
    partial = manifest(out)
    assert not partial["complete"] and [p["number"] for p in partial["panels"]] == [1, 2]
    with pytest.raises(UserError, match="incomplete"):
        load_storyboard(out)
    fn = Counting(32, 32)
    board = sb.storyboard(shots, out, keyframe_model=fn, batch_size=2, verbose=False)
    assert board.generated == (3, 4) and manifest(out)["complete"]


def test_removed_panel_files_are_cleaned_up(tmp_path):
    shots = write_shots(tmp_path)
    out = tmp_path / "board"
    sb.storyboard(shots, out, keyframe_model="oracle", verbose=False)
    shorter = SHOTS.split("  - prompt: a small yellow")[0].replace("    transition: cut\n", "")
    write_shots(tmp_path, shorter)
    board = sb.storyboard(shots, out, keyframe_model="oracle", verbose=False)
    assert board.generated == ()
    assert sorted(p.name for p in out.glob("*.png")) == [
        SHEET,
        "shot01_panel01.png",
        "shot01_panel02.png",
    ]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["missing.yaml", "--out", "{tmp}/b"], "shot list not found"),
        (["{shots}", "--out", "{tmp}/b", "--panel", "4"], "--panel 4: no such panel"),
        (["{shots}", "--out", "{tmp}/b", "--panel", "x"], "expected panel numbers"),
        (["{shots}", "--out", "{tmp}/b", "--seed", "3"], "--seed needs exactly one --panel"),
        (["{shots}", "--out", "{shots}"], "is a file"),
        (["{shots}", "--out", "{tmp}"], "pass --overwrite"),  # a folder with other files
    ],
)
def test_bad_input_is_one_line_exit_2(tmp_path, capsys, args, message):
    shots = write_shots(tmp_path)
    args = [a.format(tmp=tmp_path, shots=shots) for a in args]
    assert main(["storyboard", *args, *ORACLE]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and err.count("\n") == 0 and "Traceback" not in err


def test_prompt_the_oracle_cannot_draw_names_the_panel(tmp_path, capsys):
    shots = write_shots(tmp_path, SHOTS.replace("a small yellow square on the left", "a dragon"))
    assert main(["storyboard", str(shots), "--out", str(tmp_path / "b"), *ORACLE]) == 2
    err = capsys.readouterr().err.strip()
    assert "shots.yaml:11: panel 3: prompt:" in err and "dragon" in err
    assert not (tmp_path / "b").exists()  # checked before any work


def test_panel_lists_and_shots():
    assert parse_panels("1,3-4", 5, "--lock") == {1, 3, 4}
    assert parse_panels("all", 3, "--lock") == {1, 2, 3}
    assert parse_panels([2], 3, "--panel") == {2}
    with pytest.raises(UserError, match="--lock 0: no such panel"):
        parse_panels("0", 3, "--lock")
    assert shot_numbers(load_shotlist(EXAMPLE).panels) == [1, 1, 1, 2, 2]


def test_fit_image_covers_and_centre_crops():
    image = np.zeros((10, 30, 3), np.uint8)
    image[:, 10:20] = 255
    fitted = fit_image(image, 8, 8)
    assert fitted.shape == (8, 8, 3) and fitted.min() >= 250
    assert fit_image(image, 30, 10) is image


def test_package_exports_the_functions(tmp_path):
    import pipeline
    from pipeline import render, storyboard, tween

    assert storyboard is sb.storyboard and render is sys.modules["pipeline.render"].render
    assert tween is sys.modules["pipeline.tween"].tween and callable(tween)
    assert pipeline.storyboard is storyboard  # importing the module did not rebind the name
    board = storyboard(write_shots(tmp_path), tmp_path / "b", keyframe_model="oracle")
    assert len(board.images) == 3 and board.folder == tmp_path / "b"
