"""Shot list parsing: defaults, units, paths, and line-accurate errors for malformed files."""

from __future__ import annotations

import re
import textwrap
from pathlib import Path

import pytest

from keyframe.errors import UserError
from pipeline.shotlist import load_shotlist, panel_error, parse_shotlist

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "shapes_film.yaml"


def parse(text: str, base_dir: Path | None = None):
    return parse_shotlist(textwrap.dedent(text), "shots.yaml", base_dir=base_dir)


def test_minimal_shot_list_gets_defaults():
    shots = parse("panels:\n  - prompt: a large red circle in the center on a navy background\n")
    assert (shots.title, shots.fps, shots.width, shots.height, shots.loop) == (
        "shots",
        24,
        64,
        64,
        False,
    )
    (panel,) = shots.panels
    assert panel.number == 1 and panel.line == 2
    assert (panel.duration, panel.hold, panel.transition) == (48, 0, "cut")
    assert (panel.seed, panel.steps, panel.guidance, panel.negative, panel.image) == (
        0,
        None,  # steps and guidance: the keyframe model's own defaults
        None,
        "",
        None,
    )
    assert shots.num_frames == 48


def test_full_shot_list(tmp_path):
    (tmp_path / "keys").mkdir()
    (tmp_path / "keys" / "02.png").write_bytes(b"")
    shots = parse(
        """\
        title: Test film
        fps: 12.5
        size: [96, 64]
        loop: true
        seed: 10
        steps: 20
        guidance: 3
        negative: blurry
        duration: 48f
        models:
          keyframe: tiny
        panels:
          - prompt: 1984
            hold: 1s
          - image: keys/02.png
            prompt: "yes"
            duration: 2s
            seed: 3
            steps: 5
            guidance: 0
            negative: ""
            transition: cut
          - prompt: a   small blue
              square
            duration: 0.5 s
        """,
        base_dir=tmp_path,
    )
    assert (shots.title, shots.fps, shots.width, shots.height, shots.loop) == (
        "Test film",
        12.5,
        96,
        64,
        True,
    )
    # "tiny" is not a shapes-world keyframe model: its in-betweens default to the general one
    assert (shots.keyframe_model, shots.interpolate_model) == ("tiny", "general")
    first, second, third = shots.panels
    assert first.prompt == "1984" and second.prompt == "yes"
    assert third.prompt == "a small blue square", "whitespace is folded"
    assert [p.duration for p in shots.panels] == [48, 25, 6]  # 0.5 s * 12.5 fps rounds to 6
    assert first.hold == 12  # 1 s * 12.5 fps = 12.5 rounds (half to even) to 12
    assert [p.seed for p in shots.panels] == [10, 3, 12], "default seed + panel index"
    assert [p.steps for p in shots.panels] == [20, 5, 20]
    assert [p.guidance for p in shots.panels] == [3, 0, 3]
    assert [p.negative for p in shots.panels] == ["blurry", "", "blurry"]
    assert [p.transition for p in shots.panels] == ["tween", "cut", "tween"], "loop: last tweens"
    assert second.image == (tmp_path / "keys" / "02.png").resolve()
    assert shots.num_frames == 79
    assert second.lines["seed"] == 18


def test_image_paths_resolve_relative_to_the_file(tmp_path, monkeypatch):
    (tmp_path / "film").mkdir()
    (tmp_path / "film" / "key.png").write_bytes(b"")
    (tmp_path / "film" / "shots.yaml").write_text("panels:\n  - image: key.png\n")
    monkeypatch.chdir(tmp_path)
    shots = load_shotlist("film/shots.yaml")
    assert shots.panels[0].image == (tmp_path / "film" / "key.png").resolve()
    assert shots.panels[0].prompt is None
    assert shots.source == "film/shots.yaml"


@pytest.mark.parametrize(
    "value,frames",
    [("2s", 48), ("1.5s", 36), ("0.1s", 2), (".5s", 12), ("3 sec", 72), ("7", 7), ("30f", 30)],
)
def test_duration_units(value, frames):
    shots = parse(f"panels:\n  - prompt: x\n    duration: {value}\n")
    assert shots.panels[0].duration == frames


def test_panel_error_points_at_the_field():
    shots = parse("panels:\n  - prompt: x\n  - prompt: y\n    seed: 4\n")
    err = panel_error(shots, shots.panels[1], "seed", "made up problem")
    assert str(err) == "shots.yaml:4: panel 2: seed: made up problem"
    err = panel_error(shots, shots.panels[0], "image", "wrong size")
    assert str(err) == "shots.yaml:2: panel 1: image: wrong size"


def test_load_errors(tmp_path):
    with pytest.raises(UserError, match=r"nope\.yaml: shot list not found"):
        load_shotlist(tmp_path / "nope.yaml")
    with pytest.raises(UserError, match="got a folder"):
        load_shotlist(tmp_path)
    (tmp_path / "latin1.yaml").write_bytes("panels: [{prompt: caf\xe9}]".encode("latin-1"))
    with pytest.raises(UserError, match=r"latin1\.yaml: not UTF-8"):
        load_shotlist(tmp_path / "latin1.yaml")


def test_example_film_is_valid_and_in_the_shapes_grammar():
    shots = load_shotlist(EXAMPLE)
    assert 4 <= len(shots.panels) <= 6
    assert (shots.width, shots.height, shots.fps) == (64, 64, 24)
    assert len({p.duration for p in shots.panels}) > 1, "mixed durations"
    assert sum(p.hold > 1 for p in shots.panels) == 1
    assert sum(p.transition == "cut" for p in shots.panels[:-1]) == 1
    grammar = re.compile(
        r"a (small|medium|large) (red|green|blue|yellow|purple|orange|white|black) "
        r"(circle|square|triangle) (at the top left|at the top|at the top right|on the left|"
        r"in the center|on the right|at the bottom left|at the bottom|at the bottom right) "
        r"on a (navy|gray|beige|teal|maroon|forest|sky|pink) background"
    )
    for panel in shots.panels:
        assert grammar.fullmatch(panel.prompt), panel.prompt


PANEL = "panels:\n  - prompt: a red circle\n"

# (case id, shot list text, line, panel number or None, field, fragment of the message)
MALFORMED = [
    ("consistency not bool", PANEL + "consistency: yes please\n", 3, None, "consistency", "true"),
    (
        "noise share > 1",
        "consistency: true\nnoise_share: 2\n" + PANEL,
        2,
        None,
        "noise_share",
        "0 to 1",
    ),
    (
        "noise share alone",
        "noise_share: 0.5\n" + PANEL,
        1,
        None,
        "noise_share",
        "consistency: true",
    ),
    ("missing panels", "title: film\nfps: 24\n", 1, None, "panels", "missing"),
    ("empty panels", "fps: 24\npanels: []\n", 2, None, "panels", "at least one panel"),
    ("panels not a list", "panels:\n  prompt: x\n", 2, None, "panels", "expected a list"),
    ("empty file", "# nothing\n", 1, None, "", "empty shot list"),
    ("top is a list", "- prompt: x\n", 1, None, "", "expected a mapping"),
    (
        "no prompt, no image",
        PANEL + "  - duration: 2s\n    seed: 3\n",
        3,
        2,
        "prompt",
        "needs a prompt, an image, or both",
    ),
    ("zero duration", PANEL + "    duration: 0\n", 3, 1, "duration", "got '0'"),
    ("negative duration", PANEL + "    duration: -2s\n", 3, 1, "duration", "got '-2s'"),
    (
        "bad duration string",
        PANEL + "    duration: abc\n",
        3,
        1,
        "duration",
        "expected a positive number of seconds like '2s' or frames like 48, got 'abc'",
    ),
    ("unitless float", PANEL + "    duration: 1.5\n", 3, 1, "duration", "write '1.5s'"),
    ("under a frame", PANEL + "    duration: 0.01s\n", 3, 1, "duration", "less than one frame"),
    (
        "unknown panel key",
        PANEL + "  - prompt: b\n    negative_prompt: blur\n",
        4,
        2,
        "negative_prompt",
        "unknown key (did you mean 'negative'?)",
    ),
    ("unknown top key", "titel: x\n" + PANEL, 1, None, "titel", "did you mean 'title'?"),
    (
        "unknown key, no close match",
        PANEL + "    zzz: 1\n",
        3,
        1,
        "zzz",
        "expected one of ('prompt'",
    ),
    ("duplicate key", PANEL + "    prompt: again\n", 3, 1, "prompt", "duplicate key"),
    (
        "bad transition",
        PANEL + "    transition: fade\n  - prompt: b\n",
        3,
        1,
        "transition",
        "expected 'tween' or 'cut', got 'fade'",
    ),
    (
        "misspelt transition",
        PANEL + "    transition: twen\n  - prompt: b\n",
        3,
        1,
        "transition",
        "did you mean 'tween'?",
    ),
    (
        "last panel tweens without loop",
        PANEL + "  - prompt: b\n    transition: tween\n",
        4,
        2,
        "transition",
        "set 'loop: true'",
    ),
    ("fps zero", "fps: 0\n" + PANEL, 1, None, "fps", "expected a positive number"),
    ("fps negative", "fps: -24\n" + PANEL, 1, None, "fps", "got '-24'"),
    ("fps text", "fps: fast\n" + PANEL, 1, None, "fps", "got 'fast'"),
    ("size not multiple of 8", "size: 63\n" + PANEL, 1, None, "size", "multiple of 8"),
    ("size too small", "size: 8\n" + PANEL, 1, None, "size", "from 16"),
    ("size pair bad", "size: [64,\n  60]\n" + PANEL, 2, None, "size", "got '60'"),
    ("size triple", "size: [64, 64, 3]\n" + PANEL, 1, None, "size", "[width, height]"),
    ("seed not int", PANEL + "    seed: abc\n", 3, 1, "seed", "whole number"),
    ("seed float", "seed: 1.5\n" + PANEL, 1, None, "seed", "got '1.5'"),
    ("seed bool", PANEL + "    seed: true\n", 3, 1, "seed", "got 'true'"),
    ("seed negative", PANEL + "    seed: -1\n", 3, 1, "seed", ">= 0"),
    ("steps zero", "steps: 0\n" + PANEL, 1, None, "steps", "from 1 to 1000"),
    ("steps too many", PANEL + "    steps: 5000\n", 3, 1, "steps", "got 5000"),
    ("guidance negative", PANEL + "    guidance: -1\n", 3, 1, "guidance", "from 0 to 100"),
    ("guidance nan", "guidance: .nan\n" + PANEL, 1, None, "guidance", "got nan"),
    ("image missing", PANEL + "    image: keys/none.png\n", 3, 1, "image", "file not found"),
    ("image empty", PANEL + "    image:\n", 3, 1, "image", "got nothing"),
    (
        "hold longer than duration",
        PANEL + "    duration: 1s\n    hold: 2s\n",
        4,
        1,
        "hold",
        "'2s' (48 frames) is longer than the duration (24 frames)",
    ),
    (
        "hold fills a tween",
        PANEL + "    duration: 12\n    hold: 12\n  - prompt: b\n",
        4,
        1,
        "hold",
        "leaving no frame to tween",
    ),
    ("hold negative", PANEL + "    hold: -1\n", 3, 1, "hold", "non-negative"),
    ("non-mapping panel", PANEL + "  - a blue square\n", 3, 2, "", "expected a mapping"),
    (
        "panel is a list",
        PANEL + "  - - prompt: x\n",
        3,
        2,
        "",
        "expected a mapping like 'prompt: ...', got a list",
    ),
    ("prompt is a list", "panels:\n  - prompt: [a, b]\n", 2, 1, "prompt", "expected text"),
    ("loop with one panel", "loop: true\n" + PANEL, 1, None, "loop", "at least 2 panels"),
    ("loop not bool", "loop: sometimes\n" + PANEL, 1, None, "loop", "true or false"),
    (
        "models unknown key",
        "models:\n  keyfram: x\n" + PANEL,
        2,
        None,
        "models: keyfram",
        "did you mean 'keyframe'?",
    ),
    (
        "YAML syntax error",
        PANEL + "  - prompt: b\n    duration: [2s\n  - prompt: c\n",
        5,
        None,
        "",
        "YAML syntax error: while parsing a flow sequence",
    ),
    ("YAML bad indent", "panels:\n  - prompt: a\n   seed: 1\n", 3, None, "", "YAML syntax error"),
    ("two documents", PANEL + "---\n" + PANEL, 3, None, "", "single document"),
]


@pytest.mark.parametrize(
    "text,line,panel,key,fragment", [case[1:] for case in MALFORMED], ids=[c[0] for c in MALFORMED]
)
def test_malformed_shot_lists(tmp_path, text, line, panel, key, fragment):
    with pytest.raises(UserError) as info:
        parse_shotlist(text, "shots.yaml", base_dir=tmp_path)
    message = str(info.value)
    assert "\n" not in message, "one line"
    prefix = f"shots.yaml:{line}: " + (f"panel {panel}: " if panel else "")
    assert message.startswith(prefix), message
    if key:
        assert message[len(prefix) :].startswith(f"{key}: "), message
    assert fragment in message, message
