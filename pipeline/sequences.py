"""Numbered image sequences in and out, as VFX and animation tools name them (via fileseq).

Keys come as files (``shot_0101.png shot_0113.png``), a pattern (``shot.####.png``,
``shot_%04d.png``, ``shot.1001-1024#.exr``; ``#`` alone pads to 4 digits as in fileseq, a run of
``##..`` is one digit per ``#`` as in Nuke, ``@`` is one digit), a folder of them, or an
exposure sheet (CSV: frame, key file, hold). Timing comes, in this order, from ``--timing``,
the exposure sheet, ``--between``, or the keys' own frame numbers; numbers that only count
(1, 2, 3: consecutive) are taken as an order, not as timing (said when they are zero-padded
frame numbers). Frames before the first key are
never invented: the sequence starts at the first key's frame.
"""

from __future__ import annotations

import csv
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import fileseq

from keyframe.errors import UserError
from keyframe.image_decode import IMAGE_SUFFIXES, natural_key

KEY_SUFFIXES = (*IMAGE_SUFFIXES, ".exr")
DEFAULT_BETWEEN = 7
_PATTERN = re.compile(r"#|@|%0?\d*d|\$F\d*")


@dataclass(frozen=True)
class KeyFile:
    """A key image and where its name puts it: prefix (folder and name before the number),
    frame number (None when unnumbered), digits and suffix (``.png``)."""

    path: Path
    prefix: str
    frame: int | None
    digits: int
    suffix: str


@dataclass(frozen=True)
class Timing:
    """When each key is shown: key slots (key index, frame) in order, holds expanded to a second
    slot at the hold's last frame and, with a loop, the first key again where the loop closes;
    ``first`` is the first frame's number, ``count`` the frames shown, ``numbered`` whether
    output names carry these frame numbers (else 1, 2, ...), ``source`` where timing came from."""

    slots: tuple[tuple[int, int], ...]
    keys: tuple[int, ...]  # frame number of each key (with a loop, and where it closes)
    first: int
    count: int
    length: int  # frames the in-betweening covers (a loop's closing frame included)
    numbered: bool
    source: str
    stills: tuple[tuple[int, int], ...]  # (output index, key index) of frames showing a key

    def held(self) -> dict[int, int]:
        """Output index -> key index for every frame that shows a key exactly (keys and holds)."""
        return dict(self.stills)

    def numbers(self) -> list[int]:
        """The number each output frame is named by: its frame number, or 1, 2, ... when the
        timing is not from frame numbers (--between, or keys whose numbers only count)."""
        start = self.first if self.numbered else 1
        return list(range(start, start + self.count))

    def positions(self) -> list[int]:
        return [frame - self.first for _, frame in self.slots]


def parse_key_name(path: Path) -> KeyFile:
    """Split ``dir/shot_0101.png`` into prefix ``dir/shot_``, frame 101, 4 digits, ``.png``."""
    found = fileseq.findSequencesInList([str(path)])[0]
    frames = found.frameSet()
    if frames is None or len(frames) != 1:
        return KeyFile(path, str(path.with_suffix("")), None, 0, path.suffix)
    return KeyFile(
        path, found.dirname() + found.basename(), int(frames[0]), found.zfill(), found.extension()
    )


def is_pattern(text: str) -> bool:
    """Whether a key argument names a numbered pattern rather than one file."""
    return not Path(text).exists() and bool(_PATTERN.search(Path(text).name))


def _parse_pattern(text: str) -> fileseq.FileSequence:
    style = fileseq.PAD_STYLE_HASH1 if "##" in text else fileseq.PAD_STYLE_HASH4
    try:
        return fileseq.FileSequence(text, pad_style=style)
    except fileseq.ParseException as err:
        raise UserError(f"{text}: not a numbered pattern ({err})") from None


def find_pattern(text: str) -> list[KeyFile]:
    """The files on disk a pattern names (any number of digits), in frame order."""
    pattern = _parse_pattern(text)
    if not pattern.padding():
        raise UserError(f"{text}: no such file, and no frame number pattern (####, %04d) in it")
    folder = Path(pattern.dirname() or ".")
    name = re.compile(rf"{re.escape(pattern.basename())}(-?\d+){re.escape(pattern.extension())}")
    wanted = pattern.frameSet()
    keys = []
    if folder.is_dir():
        for path in folder.iterdir():
            match = name.fullmatch(path.name)
            if match and path.is_file() and (wanted is None or int(match[1]) in wanted):
                keys.append(parse_key_name(path))
    if not keys:
        raise UserError(f"{text}: the pattern matches no files in {folder}")
    return _in_frame_order(keys)


def _in_frame_order(keys: list[KeyFile]) -> list[KeyFile]:
    """Keys sorted by frame number; two files with one number (``_101`` and ``_0101``) are an
    error."""
    keys = sorted(keys, key=lambda k: k.frame)
    for a, b in zip(keys, keys[1:], strict=False):
        if a.frame == b.frame:
            raise UserError(
                f"{a.path.name} and {b.path.name} both give frame {a.frame}; keep one of them"
            )
    return keys


def find_keys(items: Sequence[str]) -> list[KeyFile]:
    """Key files from the command line: files, one pattern, or one folder. Numbered keys (all of
    them numbered) come in frame order; unnumbered ones in the order given (a folder's: natural)."""
    if len(items) == 1 and Path(items[0]).is_dir():
        keys = [parse_key_name(p) for p in _folder_images(Path(items[0]))]
        return _numbered_or_given(keys, folder=Path(items[0]))
    keys = []
    for item in items:
        if Path(item).is_dir():
            raise UserError(f"{item}: is a folder; give key images, or one folder of them alone")
        if is_pattern(item):
            keys.extend(find_pattern(item))
        else:
            keys.append(parse_key_name(Path(item)))
    return _numbered_or_given(keys)


def _folder_images(folder: Path) -> list[Path]:
    """Image files (EXR included) directly inside ``folder``, hidden ones skipped."""
    paths = [
        p
        for p in folder.iterdir()
        if p.suffix.lower() in KEY_SUFFIXES and not p.name.startswith(".") and p.is_file()
    ]
    if not paths:
        raise UserError(f"{folder}: no images found (expected {', '.join(KEY_SUFFIXES)})")
    return paths


def _numbered_or_given(keys: list[KeyFile], folder: Path | None = None) -> list[KeyFile]:
    if any(k.frame is None for k in keys):
        if folder is not None:
            keys = sorted(keys, key=lambda k: natural_key(k.path.name))
        return keys
    prefixes = {(Path(k.prefix).name, k.suffix.lower()) for k in keys}
    if folder is not None and len(prefixes) > 1:
        names = ", ".join(sorted(f"{p}#{s}" for p, s in prefixes))
        raise UserError(f"{folder}: holds several sequences ({names}); give one as a pattern")
    return _in_frame_order(keys)


# ---------------------------------------------------------------------------------------------
# Timing


def read_xsheet(path: str | Path) -> tuple[list[KeyFile], list[int], list[int]]:
    """An exposure sheet: CSV with a header ``frame,key[,hold]``, one row per key (key files
    relative to the sheet) -> keys, their frame numbers and holds (frames shown still, >= 1)."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: exposure sheet not found")
    with open(path, newline="", encoding="utf-8-sig") as handle:
        rows = [row for row in csv.reader(handle) if any(cell.strip() for cell in row)]
    header = [cell.strip().lower() for cell in rows[0]] if rows else []
    column = {name: header.index(name) for name in ("frame", "key", "hold") if name in header}
    if "frame" not in column or "key" not in column:
        raise UserError(f"{path}: expected a header row 'frame,key,hold' (hold optional)")
    keys, frames, holds = [], [], []
    for line, row in enumerate(rows[1:], start=2):
        cells = {n: row[i].strip() if i < len(row) else "" for n, i in column.items()}
        try:
            frame, hold = int(cells["frame"]), int(cells.get("hold") or 1)
        except ValueError:
            raise UserError(f"{path}, row {line}: frame and hold must be whole numbers") from None
        if hold < 1:
            raise UserError(f"{path}, row {line}: hold {hold}; expected 1 or more frames")
        if frames and frame < frames[-1] + holds[-1]:
            raise UserError(
                f"{path}, row {line}: frame {frame} starts before the previous key's hold "
                f"ends (frame {frames[-1] + holds[-1]})"
            )
        keys.append(parse_key_name(path.parent / cells["key"]))
        frames.append(frame)
        holds.append(hold)
    if not keys:
        raise UserError(f"{path}: the exposure sheet lists no keys")
    return keys, frames, holds


def parse_timing(text: str) -> list[int]:
    """'0,12,30' -> [0, 12, 30]."""
    try:
        return [int(part) for part in text.split(",")]
    except ValueError:
        raise UserError(
            f"--timing {text!r}: expected comma-separated frame numbers, e.g. 0,12,30"
        ) from None


def plan_timing(
    keys: Sequence[KeyFile],
    between: int | None = None,
    timing: Sequence[int] | None = None,
    loop: bool = False,
    holds: Sequence[int] | None = None,
    sheet_frames: Sequence[int] | None = None,
    say=print,
) -> Timing:
    """When each key is shown (see Timing). ``holds``/``sheet_frames`` come from an exposure
    sheet; ``say`` reports a fallback (consecutive numbers taken as an order)."""
    count = len(keys)
    numbers = [k.frame for k in keys]
    length = None
    if timing is not None:
        frames, source = _check_timing(timing, count, loop), "timing"
    elif sheet_frames is not None:
        if loop:
            raise UserError("--loop: an exposure sheet gives no frame to close the loop on")
        frames, source = list(sheet_frames), "xsheet"
    elif between is None and None not in numbers and count > 1 and not _consecutive(numbers):
        if loop:
            raise UserError(
                "--loop with numbered keys: give --timing with one more frame number (where the "
                "loop closes), or --between N"
            )
        frames, source = list(numbers), "numbers"
    else:
        padded = any(k.digits > len(str(abs(k.frame or 0))) for k in keys)
        if between is None and None not in numbers and count > 1 and padded:
            say(f"keys numbered {numbers[0]}-{numbers[-1]} one after another: taken as an order; "
                f"{DEFAULT_BETWEEN} frames between each (--between, --timing or an exposure "
                "sheet to time them)")  # fmt: skip
        (frames, length), source = _even(count, between, loop), "between"
    holds = list(holds) if holds is not None else [1] * count
    slots, stills, first = [], {}, frames[0]
    for index, (frame, hold) in enumerate(zip(frames, holds + [1] * loop, strict=True)):
        key = index % count
        slots.append((key, frame))
        if hold > 1:
            slots.append((key, frame + hold - 1))
        stills.update({f - first: key for f in range(frame, frame + hold)})
    length = length or slots[-1][1] - first + 1
    shown = length - 1 if loop else length
    stills = tuple((i, k) for i, k in sorted(stills.items()) if i < shown)
    numbered = source != "between"
    return Timing(tuple(slots), tuple(frames), first, shown, length, numbered, source, stills)


def _consecutive(numbers: Sequence[int]) -> bool:
    return all(b - a == 1 for a, b in zip(numbers, numbers[1:], strict=False))


def _check_timing(timing: Sequence[int], count: int, loop: bool) -> list[int]:
    slots = count + 1 if loop else count
    if len(timing) != slots:
        extra = " (with --loop: one more, where the loop closes)" if loop else ""
        raise UserError(
            f"--timing has {len(timing)} frame numbers for {count} keys; expected {slots}{extra}"
        )
    if timing[0] < 0:
        raise UserError(f"--timing {list(timing)}: frame numbers must be >= 0")
    if any(b <= a for a, b in zip(timing, timing[1:], strict=False)):
        raise UserError(f"--timing {list(timing)}: frame numbers must be strictly increasing")
    return list(timing)


def _even(count: int, between: int | None, loop: bool) -> tuple[list[int], int]:
    """Evenly spaced frames from 0 and the length; one key with --between N: N frames after it."""
    slots = count + 1 if loop else count
    if count == 1 and between is None and not loop:
        raise UserError("a single key needs --between N (how many frames to generate after it)")
    between = DEFAULT_BETWEEN if between is None else between
    if between < 0 or (between == 0 and slots == 1):
        raise UserError(f"--between {between}: expected a number of frames >= 1")
    if slots == 1:
        return [0], between + 1
    frames = [i * (between + 1) for i in range(slots)]
    return frames, frames[-1] + 1
