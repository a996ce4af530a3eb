"""pipeline.sequences: numbered keys (files, patterns, folders, exposure sheets) and timing."""

from __future__ import annotations

from pathlib import Path

import pytest

from keyframe.errors import UserError
from pipeline.sequences import find_keys, parse_key_name, plan_timing, read_xsheet


def _touch(folder: Path, *names: str) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for name in names:
        (folder / name).write_bytes(b"")


def test_key_names_split_into_prefix_frame_and_digits(tmp_path):
    key = parse_key_name(tmp_path / "shot_0101.png")
    assert (Path(key.prefix).name, key.frame, key.digits, key.suffix) == ("shot_", 101, 4, ".png")
    key = parse_key_name(tmp_path / "plate.1001.exr")
    assert (Path(key.prefix).name, key.frame, key.suffix) == ("plate.", 1001, ".exr")
    assert parse_key_name(tmp_path / "pose.png").frame is None


@pytest.mark.parametrize(
    "pattern",
    ["shot_####.png", "shot_#.png", "shot_%04d.png", "shot_@@@@.png", "shot_101-125#.png"],
)
def test_patterns_find_the_numbered_keys_in_frame_order(tmp_path, pattern):
    _touch(tmp_path, "shot_0125.png", "shot_0101.png", "shot_0113.png", "other_0001.png")
    keys = find_keys([str(tmp_path / pattern)])
    assert [k.frame for k in keys] == [101, 113, 125]
    assert [k.path.name for k in keys] == ["shot_0101.png", "shot_0113.png", "shot_0125.png"]


def test_a_range_pattern_keeps_only_its_frames_and_a_folder_is_one_sequence(tmp_path):
    _touch(tmp_path / "keys", "shot.1001.png", "shot.1012.png", "shot.1030.png")
    keys = find_keys([str(tmp_path / "keys" / "shot.1001-1024#.png")])
    assert [k.frame for k in keys] == [1001, 1012]
    assert [k.frame for k in find_keys([str(tmp_path / "keys")])] == [1001, 1012, 1030]
    _touch(tmp_path / "keys", "bg.0001.png")
    with pytest.raises(UserError, match="holds several sequences"):
        find_keys([str(tmp_path / "keys")])


def test_keys_given_in_any_order_are_sorted_by_their_numbers(tmp_path):
    _touch(tmp_path, "shot_0113.png", "shot_0101.png")
    keys = find_keys([str(tmp_path / "shot_0113.png"), str(tmp_path / "shot_0101.png")])
    assert [k.frame for k in keys] == [101, 113]


@pytest.mark.parametrize(
    ("names", "message"),
    [
        (["shot_101.png", "shot_0101.png"], "both give frame 101"),
        (["nope_####.png"], "the pattern matches no files"),
    ],
)
def test_bad_key_lists_are_one_line_errors(tmp_path, names, message):
    _touch(tmp_path, "shot_101.png", "shot_0101.png")
    with pytest.raises(UserError, match=message):
        find_keys([str(tmp_path / n) for n in names])


def test_timing_from_frame_numbers_starts_at_the_first_key(tmp_path):
    _touch(tmp_path, "shot_0101.png", "shot_0113.png", "shot_0125.png")
    timing = plan_timing(find_keys([str(tmp_path / "shot_####.png")]))
    assert (timing.first, timing.count, timing.source) == (101, 25, "numbers")
    assert timing.positions() == [0, 12, 24] and timing.numbered
    assert timing.held() == {0: 0, 12: 1, 24: 2}
    override = plan_timing(find_keys([str(tmp_path / "shot_####.png")]), timing=[1, 5, 9])
    assert (override.first, override.count, override.positions()) == (1, 9, [0, 4, 8])
    with pytest.raises(UserError, match="--loop with numbered keys"):
        plan_timing(find_keys([str(tmp_path / "shot_####.png")]), loop=True)


def test_consecutive_numbers_are_an_order_and_the_fallback_is_said(tmp_path):
    _touch(tmp_path, "pose_0001.png", "pose_0002.png")
    said = []
    timing = plan_timing(find_keys([str(tmp_path / "pose_####.png")]), say=said.append)
    assert timing.source == "between" and timing.positions() == [0, 8] and not timing.numbered
    assert len(said) == 1 and "taken as an order" in said[0]


def test_an_exposure_sheet_gives_frames_and_holds(tmp_path):
    _touch(tmp_path, "a.png", "b.png")
    sheet = tmp_path / "x.csv"
    sheet.write_text("frame,key,hold\n1,a.png,3\n9,b.png,2\n")
    keys, frames, holds = read_xsheet(sheet)
    assert [k.path.name for k in keys] == ["a.png", "b.png"]
    timing = plan_timing(keys, holds=holds, sheet_frames=frames)
    assert (timing.first, timing.count, timing.source) == (1, 10, "xsheet")
    assert timing.slots == ((0, 1), (0, 3), (1, 9), (1, 10))  # a hold ends in a second key
    assert timing.held() == {0: 0, 1: 0, 2: 0, 8: 1, 9: 1}


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("key,frame\n", "lists no keys"),
        ("frame,file\n1,a.png\n", "expected a header row"),
        ("frame,key,hold\n1,a.png,x\n", "row 2: frame and hold must be whole numbers"),
        ("frame,key,hold\n1,a.png,4\n3,b.png\n", "row 3: frame 3 starts before"),
        ("frame,key,hold\n1,a.png,0\n", "row 2: hold 0"),
    ],
)
def test_bad_exposure_sheets_name_the_row(tmp_path, text, message):
    sheet = tmp_path / "x.csv"
    sheet.write_text(text)
    with pytest.raises(UserError, match=message):
        read_xsheet(sheet)
