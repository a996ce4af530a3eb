"""The `--device` value of the commands that run a model, checked in one place."""

from __future__ import annotations

from keyframe.errors import UserError


def resolve_device(name: str | None) -> str:
    """``None``/``"auto"`` -> ``"cuda"`` when a GPU is there, else ``"cpu"``; any other name is
    checked (a UserError for a malformed one, or for CUDA on a machine without it)."""
    import torch

    if name in (None, "auto"):
        return "cuda" if torch.cuda.is_available() else "cpu"
    try:
        device = torch.device(name)
    except RuntimeError:
        raise UserError(f"--device {name!r}: expected cpu, cuda, cuda:N or auto") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UserError(f"--device {name}: CUDA is not available on this machine")
    return str(device)
