"""Names and folders of general interpolators (no torch: cheap to import from the CLI)."""

from __future__ import annotations

import os
from pathlib import Path

from keyframe import hub
from keyframe.errors import UserError

WEIGHTS_DIR = Path(__file__).resolve().parent.parent / "weights"


def is_general(name_or_path: str | os.PathLike) -> bool:
    """Whether a model name or folder is a general interpolator (not the shapes kind)."""
    try:
        return hub.read_config(hub.resolve(name_or_path, "general"))[1] == "general"
    except UserError:
        return False
