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


def load_checkpoint(path: str | os.PathLike, what: str = "checkpoint") -> dict:
    """A Lightning .ckpt (or torch.save file) read with ``weights_only=True``: tensors, numbers,
    strings and containers only, so a crafted file cannot run code while it is read (a plain
    ``torch.load`` runs any pickled callable under torch < 2.6). Any failure is one UserError
    line naming the file."""
    import pickle

    import torch

    from keyframe.errors import UserError

    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        if "GLOBAL" in str(err):  # torch's refusal of a class or function it does not allow
            raise UserError(
                f"{path}: refused: the {what} holds pickled Python objects besides tensors, "
                "which could run code when loaded (only plain Lightning checkpoints are read)"
            ) from None
        raise UserError(f"{path}: not a readable {what} (not a torch file)") from None
    except FileNotFoundError:
        raise UserError(f"{path}: {what} not found") from None
    except Exception as err:  # truncated or not a torch file at all
        detail = " ".join(str(err).split())[:200]
        if "zip archive" in detail or "central directory" in detail:
            detail = "truncated, or not a torch file"
        raise UserError(f"{path}: not a readable {what} ({detail})") from None
    if not isinstance(ckpt, dict):
        raise UserError(f"{path}: not a {what} (expected a dict, got {type(ckpt).__name__})")
    return ckpt
