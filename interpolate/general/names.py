"""Names and folders of general interpolators (no torch: cheap to import from the CLI)."""

from __future__ import annotations

import json
import os
from pathlib import Path

from keyframe.errors import UserError

WEIGHTS_DIR = Path(__file__).resolve().parent.parent / "weights"
CONFIG_NAME, WEIGHTS_NAME = "config.json", "model.safetensors"
KIND = "general-interpolator"


def is_general(name_or_path: str | os.PathLike) -> bool:
    """Whether a model name or folder is a general interpolator (not the shapes kind)."""
    try:
        folder = resolve(name_or_path)
        return json.loads((folder / CONFIG_NAME).read_text()).get("kind") == KIND
    except (UserError, OSError, ValueError):
        return False


def shipped_models() -> list[str]:
    return sorted(p.parent.name for p in WEIGHTS_DIR.glob(f"*/{CONFIG_NAME}")
                  if json.loads(p.read_text()).get("kind") == KIND)  # fmt: skip


def resolve(name_or_path: str | os.PathLike) -> Path:
    """A folder from save_pretrained, or the name of a shipped model."""
    path = Path(name_or_path)
    if path.is_dir():
        return path
    shipped = WEIGHTS_DIR / str(name_or_path)
    if (shipped / CONFIG_NAME).is_file():
        return shipped
    raise UserError(f"model {name_or_path}: no such folder or shipped general interpolator")
