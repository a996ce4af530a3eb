"""Reading trained weights to start a run from (`model.init_from` of both diffusion stages).

Lightning .ckpt files, .safetensors files and exported folders all become one flat state dict;
`find_prefix` locates a sub-model (the U-Net, the text tower) in it whatever it was called there.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from keyframe.errors import UserError
from keyframe.files import load_checkpoint


def find_prefix(state: Mapping[str, Any], markers: Sequence[str]) -> str | None:
    """The key prefix under which all `markers` exist (an EMA copy preferred), else None."""
    found = set()
    for key in state:
        if key.endswith(markers[0]):
            prefix = key[: len(key) - len(markers[0])]
            if all(prefix + m in state for m in markers[1:]):
                found.add(prefix)
    if not found:
        return None
    return sorted(found, key=lambda p: ("ema" not in p, len(p), p))[0]


def read_state(path: str) -> dict[str, torch.Tensor]:
    """A flat state dict from a Lightning .ckpt, a .safetensors file, or a folder of them."""
    source = Path(path)
    if not source.exists():
        raise UserError(f"model.init_from: {path}: no such file or folder")
    files = sorted(source.glob("*.safetensors")) if source.is_dir() else [source]
    if not files:
        raise UserError(f"model.init_from: {path}: folder holds no .safetensors weights")
    state: dict[str, torch.Tensor] = {}
    for file in files:
        try:
            if file.suffix == ".safetensors":
                from safetensors.torch import load_file

                state.update(load_file(file))
            else:
                ckpt = load_checkpoint(file, "checkpoint to start from")
                state.update(ckpt.get("state_dict", ckpt))
        except UserError as err:
            raise UserError(f"model.init_from: {err}") from None
        except Exception as err:
            detail = " ".join(str(err).split())[:200]
            raise UserError(f"model.init_from: {file}: unreadable weights ({detail})") from None
    from keyframe.int8 import dequantize

    return dequantize(state)  # int8 exports (`animatic export --int8`) back to floats


def sub_state(state: Mapping[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    """The entries of `state` under `prefix`, with the prefix taken off."""
    return {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}


def load_sub_state(
    target: torch.nn.Module, state: Mapping[str, torch.Tensor], prefix: str, error: str
) -> None:
    """Load `state`'s entries under `prefix` into `target` (strictly); a mismatch is a UserError
    reading `error (what differs)`."""
    try:
        target.load_state_dict(sub_state(state, prefix))
    except RuntimeError as err:
        detail = " ".join(str(err).split())[:200]
        raise UserError(f"{error} ({detail})") from None
