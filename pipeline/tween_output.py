"""Where `animatic tween` writes: numbered frames (PNG or EXR, at the keys' depth), ProRes, MP4
or GIF. Keys are copied byte for byte into a sequence of their own format; everything is checked
(names, keys not overwritten, existing files) before the first frame is written.

``--out`` forms: a pattern (``out/shot_####.png``, ``out/shot.%04d.exr``: frame numbers from the
keys, or 1, 2, ... for unnumbered keys); a folder (numbered keys: their own names, e.g.
``out/shot_0101.png``; else ``out/out.0001.png``); a ``.mov`` (ProRes 4444 for keys with alpha,
else 422 HQ), ``.mp4`` or ``.gif`` (8-bit RGB: alpha is composited onto white).
"""

from __future__ import annotations

import re
import shutil
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import fileseq
import numpy as np

from keyframe.errors import UserError
from keyframe.files import atomic_path
from pipeline import io, io_video, media
from pipeline.sequences import KeyFile, Timing, is_pattern

VIDEOS = (".mp4", ".gif", ".mov")
FRAMES = (".png", ".exr", ".tif", ".tiff")


@dataclass(frozen=True)
class Target:
    """An output: ``kind`` "frames" (with the fileseq ``pattern`` its names come from and
    whether they carry frame numbers) or a video suffix ("mov", "mp4", "gif")."""

    out: Path
    kind: str
    pattern: fileseq.FileSequence | None = None
    numbered: bool = False

    def paths(self, timing: Timing) -> list[Path]:
        """The file of each output frame (frames only)."""
        if self.numbered:
            return [Path(self.pattern.frame(n)) for n in timing.numbers()]
        return [Path(self.pattern.frame(1 + i)) for i in range(timing.count)]

    @property
    def record_path(self) -> Path:
        """The path whose sidecar records this output: ``out/shot_####.png`` -> ``out/shot``
        (sidecar ``out/shot.json``); a folder or video is its own."""
        if self.kind == "frames" and is_pattern(str(self.out)):
            stem = self.pattern.basename().rstrip("._-") or "frames"
            return Path(self.pattern.dirname() or ".") / stem
        return self.out


def output_target(out: str | Path, keys: list[KeyFile], timing: Timing, exr: bool) -> Target:
    """What ``--out`` names, given the keys and their timing (see the module docstring)."""
    out = Path(out)
    suffix = out.suffix.lower()
    if suffix in VIDEOS and not out.is_dir():
        return Target(out, suffix[1:])
    if is_pattern(str(out)):
        style = fileseq.PAD_STYLE_HASH1 if "##" in out.name else fileseq.PAD_STYLE_HASH4
        pattern = fileseq.FileSequence(str(out), pad_style=style)
        if pattern.frameSet() is not None:
            raise UserError(f"--out {out}: give no frame range (numbers come from the keys)")
        if pattern.extension().lower() not in FRAMES:
            raise UserError(f"--out {out}: frames must be .png or .exr (or a .mov, .mp4, .gif)")
        return Target(out, "frames", pattern, timing.numbered)
    if suffix and not out.is_dir():
        raise UserError(
            f"--out {out}: expected a folder, a numbered pattern (shot.####.png) or a "
            f".mov / .mp4 / .gif, not '{out.suffix}'"
        )
    ext = ".exr" if exr else ".png"
    named = timing.numbered and keys[0].frame is not None
    if named:
        text = f"{Path(keys[0].prefix).name}{'#' * keys[0].digits}{ext}"
    else:
        text = f"{out.name}.####{ext}"
    pattern = fileseq.FileSequence(str(out / text), pad_style=fileseq.PAD_STYLE_HASH1)
    return Target(out, "frames", pattern, named)


def check_target(target: Target, timing: Timing, keys: list[KeyFile], overwrite: bool) -> None:
    """Refuse, before anything is written: a frame that would replace a key, existing frames of
    the sequence (without ``overwrite``), an existing video (without ``overwrite``)."""
    if target.kind != "frames":
        io.check_writable(target.out, overwrite)
        return
    folder = Path(target.pattern.dirname() or ".")
    io.check_writable(folder, True, folder=True)
    sources = {k.path.resolve(): k.path for k in keys}
    for path in target.paths(timing):
        if path.resolve() in sources:
            raise UserError(
                f"--out {target.out}: frame {path.name} would overwrite key "
                f"{sources[path.resolve()]}; write the frames to another folder or name"
            )
    existing = _same_sequence(target)
    if existing and not overwrite:
        raise UserError(
            f"{folder}: already holds frames {sorted(existing)[0].name}...; "
            "pass --overwrite to replace them"
        )


def _same_sequence(target: Target) -> set[Path]:
    """Files in the target's folder named like its frames (any number)."""
    folder = Path(target.pattern.dirname() or ".")
    name = re.escape(target.pattern.basename()) + r"-?\d+" + re.escape(target.pattern.extension())
    if not folder.is_dir():
        return set()
    return {p for p in folder.iterdir() if re.fullmatch(name, p.name) and p.is_file()}


def frame_depth(suffix: str, depth: str) -> str:
    """The depth a frame file gets: PNG/TIFF 8 or 16-bit, EXR half or float."""
    if suffix.lower() == ".exr":
        return "float" if depth == "float" else "half"
    return "8-bit" if depth == "8-bit" else "16-bit"


def conversion_note(target: Target, depth: str, channels: int) -> str | None:
    """A line saying what an output cannot keep of the keys (said before writing), or None."""
    if target.kind in ("mp4", "gif"):
        lost = []
        if channels == 4:
            lost.append("alpha composited onto white")
        if depth != "8-bit":
            lost.append(f"{depth} reduced to 8-bit")
        if lost:
            return f"{target.out.suffix} is 8-bit RGB: {', '.join(lost)} (.mov or frames keep them)"
        return None
    if target.kind == "frames":
        suffix = target.pattern.extension().lower()
        if suffix != ".exr" and depth in ("half", "float"):
            return "EXR keys written as 16-bit frames: values clipped to [0, 1], kept linear"
        if suffix == ".exr" and depth in ("8-bit", "16-bit"):
            return (
                f"{depth} keys written as half EXR: values stored as in the keys (not linearised)"
            )
    return None


def write_output(
    target: Target,
    frames: Iterable[np.ndarray],
    timing: Timing,
    keys: list[KeyFile],
    pixels: list[np.ndarray],
    copyable: list[bool],
    depth: str,
    fps: float,
    overwrite: bool = False,
) -> list[Path]:
    """Write every frame (float32, the media contract); frames that show a key take the key's
    own pixels, and in a sequence of the key's format and depth the key file's own bytes."""
    held = timing.held()
    shown = (pixels[held[i]] if i in held else frame for i, frame in enumerate(frames))
    if target.kind == "mov":
        profile = media.prores_profile(pixels[0].shape[-1])
        return [media.write_prores(target.out, shown, fps, profile, overwrite=overwrite)]
    if target.kind in ("mp4", "gif"):
        return io_video.write_video(target.out, map(media.to_rgb8, shown), fps, overwrite=overwrite)
    existing = _same_sequence(target)
    paths = target.paths(timing)
    suffix = target.pattern.extension().lower()
    out_depth = frame_depth(suffix, depth)
    written = []
    for index, frame in enumerate(frames):
        path = paths[index]
        key = held.get(index)
        if key is not None and copyable[key] and _same_format(keys[key], suffix, depth, out_depth):
            _copy(keys[key].path, path)
        else:
            media.write_frame(path, pixels[key] if key is not None else frame, out_depth, True)
        written.append(path)
    for stale in existing - set(written) - {k.path for k in keys}:
        stale.unlink(missing_ok=True)
    return written


def _same_format(key: KeyFile, suffix: str, depth: str, out_depth: str) -> bool:
    same = {".tif": ".tiff"}
    return same.get(key.suffix.lower(), key.suffix.lower()) == same.get(suffix, suffix) and (
        depth == out_depth
    )


def _copy(source: Path, target: Path) -> None:
    with atomic_path(target) as tmp:
        shutil.copyfile(source, tmp)
