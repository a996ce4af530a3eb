"""Atomic file writing, shared by both stages and the pipeline: a temp file in the target's folder
is put in place by one `os.replace` only when complete, so no reader sees a half-written file."""

from __future__ import annotations

import os
import secrets
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from pathlib import Path


@contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temp path next to ``path``; on success it replaces ``path`` in one step.

    On any failure (KeyboardInterrupt included) the temp file is removed and ``path`` is
    untouched, so no reader ever sees a half-written output. The temp name keeps the suffix
    (writers that dispatch on it still work) and starts with a dot (folder listings skip it).
    Atomic against crashes of this process; not fsync'ed against power loss.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.{secrets.token_hex(4)}.tmp{path.suffix}")
    try:
        yield tmp
        os.replace(tmp, path)
    except BaseException:
        with suppress(FileNotFoundError):
            tmp.unlink()
        raise


def atomic_write(path: str | os.PathLike, write: Callable[[Path], object]) -> None:
    """`write(tmp)` to a temp file next to `path`, then put it in place atomically, with the
    permissions a new file gets here (safetensors writes 0600)."""
    with atomic_path(path) as tmp:
        write(tmp)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
