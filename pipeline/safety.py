"""Guards every command shares: plain file names from manifests, temp files of killed runs,
write probes before long work, and the limits checked before any work starts.

Each check raises UserError with one line naming the value, the limit and what to do; nothing
here writes outside the folder it is given.
"""

from __future__ import annotations

import errno
import math
import os
import re
import secrets
import shutil
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

from keyframe.errors import UserError

# `keyframe.files.atomic_path` names its temp files `.STEM.XXXXXXXX.tmpSUFFIX`; render's PNG
# sequences are built in `.NAME.XXXXXXXX.tmp` folders.
TEMP_NAME = re.compile(r"\..+\.[0-9a-f]{8}\.tmp(\.[A-Za-z0-9]{1,8})?")

MAX_FRAMES = 100_000  # frames one command makes: over an hour at 24 fps
MAX_IMAGE_SIDE = 16384  # pixels, either side of an image read or written
MAX_IMAGE_PIXELS = 64 * 2**20  # 64 Mpx: an 8K frame is 33 Mpx (decoded: 192 MB of RGB)
MIN_FREE_BYTES = 16 * 2**20  # an output folder with less free space is refused up front


# ---------------------------------------------------------------- names from manifests


def plain_name(name: object, where: str) -> str:
    """``name`` if it is a plain file name (no folder part, not ``.``/``..``), else UserError.

    Names read from a manifest are joined to the manifest's folder; one like ``../x`` or
    ``/etc/x`` would reach (and a rerun delete) files outside it.
    """
    if (
        not isinstance(name, str)
        or name in ("", ".", "..")
        or "/" in name
        or "\\" in name
        or "\0" in name
        or name != name.strip()
        or Path(name).is_absolute()
    ):
        raise UserError(f"{where}: {name!r} is not a plain file name inside the folder")
    return name


def member(folder: str | os.PathLike, name: object, where: str) -> Path:
    """``folder / name`` for a plain ``name`` (see plain_name)."""
    return Path(folder) / plain_name(name, where)


# ---------------------------------------------------------------- temp files of killed runs


def temporaries(folder: str | os.PathLike, stems: Iterable[str] | None = None) -> list[Path]:
    """The atomic writers' temp files and folders in ``folder`` (only those of the outputs named
    ``stems``, e.g. ``film.mp4`` and ``film``, when given)."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    prefixes = None if stems is None else tuple(f".{stem}." for stem in stems)
    found = []
    for path in folder.iterdir():
        if not TEMP_NAME.fullmatch(path.name):
            continue
        if prefixes is None or path.name.startswith(prefixes):
            found.append(path)
    return sorted(found)


def clean_temporaries(folder: str | os.PathLike, stems: Iterable[str] | None = None) -> int:
    """Remove what `temporaries` finds (left by a run killed mid-write); returns how many.
    Call it only while holding the folder's or output's lock (pipeline.locks)."""
    removed = 0
    for path in temporaries(folder, stems):
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)
        removed += 1
    return removed


# ---------------------------------------------------------------- writing


@contextmanager
def atomic_folder(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temp folder next to ``path`` (which must not exist); on success it becomes
    ``path`` in one rename, on any failure it is removed: a new folder appears only complete."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    tmp.mkdir(parents=True)
    try:
        yield tmp
        os.replace(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _nearest_folder(path: Path) -> Path:
    parent = path if path.is_dir() else path.parent
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    return parent


def probe_writable(path: str | os.PathLike, need_bytes: int | None = None) -> None:
    """UserError unless a file can be created where ``path`` will be written (read-only file
    systems and root-owned folders fail here, before the work) and ``need_bytes`` (default
    MIN_FREE_BYTES) are free."""
    need_bytes = MIN_FREE_BYTES if need_bytes is None else need_bytes
    path = Path(path)
    folder = _nearest_folder(path)
    probe = folder / f".animatic-probe.{secrets.token_hex(4)}"
    try:
        with open(probe, "wb") as handle:
            handle.write(b"\0")
    except OSError as err:
        raise UserError(f"{path}: cannot write in {folder} ({err.strerror or err})") from None
    finally:
        probe.unlink(missing_ok=True)
    try:
        free = shutil.disk_usage(folder).free
    except OSError:
        return
    if free < need_bytes:
        raise UserError(
            f"{path}: only {free / 2**20:.1f} MiB free in {folder}, "
            f"{need_bytes / 2**20:.0f} MiB needed; free some space or write elsewhere"
        )


WRITE_ERRNOS = {errno.ENOSPC, errno.EROFS, errno.EDQUOT, errno.EACCES, errno.EPERM, errno.EFBIG}


def write_error(err: OSError) -> str | None:
    """A one-line message for a failed write (disk full, read-only, no permission), else None."""
    if err.errno not in WRITE_ERRNOS:
        return None
    where = f"{err.filename}: " if err.filename else ""
    reason = err.strerror or os.strerror(err.errno)
    return f"{where}cannot write ({reason}); nothing half-written was kept"


# ---------------------------------------------------------------- limits


def check_number(
    value: object, name: str, low: float, high: float, integer: bool = False
) -> float | int:
    """``value`` if it is a finite number (an integer if asked) in [low, high], else UserError."""
    kind = "a whole number" if integer else "a number"
    ok = isinstance(value, (int, float)) and not isinstance(value, bool)
    if ok and integer:
        ok = isinstance(value, int) or (math.isfinite(value) and float(value).is_integer())
    if not ok or not math.isfinite(value) or not low <= value <= high:
        raise UserError(
            f"{name}: expected {kind} from {_show(low)} to {_show(high)}, got {value!r}"
        )
    return int(value) if integer else value


def _show(number: float) -> str:
    """A limit as people write it: 100, 0.001, 9223372036854775807 (not 9.22337e+18)."""
    return str(int(number)) if float(number).is_integer() else f"{number:g}"


def check_frame_count(count: int, what: str) -> None:
    """UserError for a frame count over MAX_FRAMES (before any frame is made)."""
    if count > MAX_FRAMES:
        raise UserError(
            f"{what}: {count} frames is more than {MAX_FRAMES} (over an hour at 24 fps); "
            "split the shot"
        )


def check_image_size(width: int, height: int, where: str) -> None:
    """UserError for an image larger than MAX_IMAGE_SIDE a side or MAX_IMAGE_PIXELS in all."""
    if max(width, height) > MAX_IMAGE_SIDE or width * height > MAX_IMAGE_PIXELS:
        raise UserError(
            f"{where}: {width}x{height} is too large (at most {MAX_IMAGE_SIDE} px a side and "
            f"{MAX_IMAGE_PIXELS // 2**20} Mpx); scale it down first"
        )


def image_header_size(path: str | os.PathLike) -> tuple[int, int] | None:
    """(width, height) from an image file's header without decoding it; None if Pillow cannot
    tell (OpenCV may still read the file)."""
    import warnings

    from PIL import Image

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # Pillow's decompression-bomb warning: checked here
            with Image.open(path) as image:
                return image.size
    except Exception:  # Pillow reads fewer formats than OpenCV; a bomb error also lands here
        return _bomb_size(path)


def _bomb_size(path: str | os.PathLike) -> tuple[int, int] | None:
    """The size of an image Pillow refuses as a decompression bomb (it still parses the header)."""
    from PIL import Image

    limit = Image.MAX_IMAGE_PIXELS
    try:
        Image.MAX_IMAGE_PIXELS = None
        with Image.open(path) as image:
            return image.size
    except Exception:
        return None
    finally:
        Image.MAX_IMAGE_PIXELS = limit


def check_image_file(path: str | os.PathLike) -> None:
    """UserError for an image file whose header says it is too large (before decoding it)."""
    size = image_header_size(path)
    if size is not None:
        check_image_size(*size, str(path))


def json_safe(value: object) -> object:
    """``value`` with every non-finite float replaced by its name ("nan", "inf", "-inf"), so
    sidecars stay valid JSON (bare NaN is not JSON)."""
    if isinstance(value, float) and not math.isfinite(value):
        return "nan" if math.isnan(value) else ("inf" if value > 0 else "-inf")
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    return value
