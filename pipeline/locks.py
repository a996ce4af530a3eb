"""One writer per output: an exclusive lock that says who holds it, and survives `kill -9`.

`exclusive(target)` takes the lock file ``.NAME.animatic-lock`` next to ``target`` (a film, a
storyboard folder, a dataset folder) with ``flock``, which the kernel releases when its holder
dies however it dies; the file records the holder (pid, host, start time, command) so a second
run can say who has it. A lock file left by a dead process is taken over with a note. Locking is
advisory: it keeps animatic runs apart, not other programs.
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from datetime import datetime, timezone
from pathlib import Path

from keyframe.errors import UserError

SUFFIX = ".animatic-lock"


def lock_path(target: str | os.PathLike) -> Path:
    """The lock file of ``target``: ``dir/film.mp4`` -> ``dir/.film.mp4.animatic-lock``."""
    target = Path(target)
    name = target.name or target.resolve().name
    return target.parent / f".{name}{SUFFIX}"


def _holder() -> dict:
    return {
        "pid": os.getpid(),
        "host": socket.gethostname(),
        "since": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "command": " ".join(sys.argv)[:300],
    }


def _read_holder(fd: int) -> dict | None:
    with suppress(OSError, ValueError):
        os.lseek(fd, 0, os.SEEK_SET)
        record = json.loads(os.read(fd, 1 << 16).decode("utf-8"))
        return record if isinstance(record, dict) else None
    return None


def describe(record: dict | None) -> str:
    """'pid N on host H since T' for a lock record (or 'an unknown process')."""
    if not record:
        return "an unknown process"
    return f"pid {record.get('pid')} on host {record.get('host')} since {record.get('since')}"


def _open_locked(path: Path, what: str) -> int:
    """An fd of ``path`` holding its flock; UserError naming the holder if another has it."""
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _read_holder(fd)
            os.close(fd)
            raise UserError(
                f"{what}: another animatic run is writing it ({describe(holder)}); "
                f"wait for it to finish (lock file {path})"
            ) from None
        except OSError:
            os.close(fd)
            raise
        # The holder before us may have removed the file after we opened it: lock the live one.
        with suppress(FileNotFoundError):
            if os.fstat(fd).st_ino == os.stat(path).st_ino:
                return fd
        os.close(fd)


@contextmanager
def exclusive(
    target: str | os.PathLike, what: str | None = None, say: Callable[[str], None] | None = None
) -> Iterator[Path]:
    """Hold the lock of ``target`` for the block; yields the lock file's path.

    ``what`` names the target in messages (default: the path). ``say`` receives the note about a
    stale lock taken over (default: print to stderr).
    """
    path = lock_path(target)
    what = what or str(target)
    ancestor = path.parent
    while not ancestor.exists() and ancestor != ancestor.parent:
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        raise UserError(f"{what}: cannot create it, {ancestor} is a file")
    made = [p for p in (path.parent, *path.parent.parents) if not p.exists()]
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = _open_locked(path, what)
    except OSError as err:
        raise UserError(f"{what}: cannot take the lock {path} ({err.strerror or err})") from None
    try:
        stale = _read_holder(fd)
        if stale:
            note = f"{what}: took over the lock of {describe(stale)}, which is no longer running"
            (say or (lambda text: print(f"note: {text}", file=sys.stderr)))(note)
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(_holder()).encode("utf-8"), 0)
        yield path
    finally:
        with suppress(OSError):
            os.unlink(path)  # while still holding it, so no one locks a file about to vanish
        os.close(fd)
        for folder in made:  # folders made for the lock alone go again (if still empty)
            with suppress(OSError):
                folder.rmdir()
