"""Autoencoder files: the {"kind", "config"} record that checkpoints and model configs store,
`save_autoencoder` / `load_autoencoder` (a folder of json + safetensors, a training `.ckpt`,
'identity', or a shipped model's name), and the weight comparison that shared autoencoders need."""

from __future__ import annotations

import inspect
import json
import os
from pathlib import Path
from typing import Any

import torch

from keyframe.autoencoder import Autoencoder, FrameAutoencoder, IdentityAutoencoder
from keyframe.errors import UserError
from keyframe.files import atomic_write, load_checkpoint

WEIGHTS_NAME = "autoencoder.safetensors"
CONFIG_NAME = "autoencoder.json"
FORMAT_VERSION = 1


def autoencoder_record(ae: Autoencoder) -> dict[str, Any]:
    """The architecture as checkpoints and model configs store it (the weights go elsewhere):
    {"kind", "config"}, read back by `build_autoencoder`."""
    return {"kind": ae.kind, "config": ae.config()}


def build_autoencoder(record: Any, where: Path) -> Autoencoder:
    """The autoencoder an `autoencoder_record` describes, weights not loaded; `where` names the
    file it came from in errors."""
    try:
        kind, config = record["kind"], dict(record["config"])
        if kind == "shipped":
            return _shipped_copy(record["name"], config, where)
        if kind == "identity":
            return IdentityAutoencoder(**config)
        if kind == "kl":
            return FrameAutoencoder(**config)
    except (KeyError, TypeError, ValueError) as err:
        raise UserError(f"{where}: bad autoencoder config ({err})") from None
    raise UserError(f"{where}: unknown autoencoder kind {kind!r} (expected kl or identity)")


def first_different_weight(
    a: torch.nn.Module, b: torch.nn.Module, prefix: str = "", fp16: bool = False
) -> str | None:
    """The first weight of `a` under `prefix` (latent scale and shift left out) that is not
    equal to `b`'s, compared after rounding to fp16 if `fp16` (as shipped); None if all are."""
    theirs = b.state_dict()
    for key, value in a.state_dict().items():
        if not key.startswith(prefix) or key in ("latent_scale", "latent_shift"):
            continue
        mine, other = value.detach().cpu(), theirs[key].detach().cpu().to(value.dtype)
        if fp16:
            mine, other = mine.half().float(), other.half().float()
        if not torch.equal(mine, other):
            return key
    return None


def _shipped_copy(name: str, config: dict, where: Path) -> Autoencoder:
    """The autoencoder shipped as `name` (inside that keyframe model), weights loaded; it must be
    the one the model was trained with (same architecture and latent scale)."""
    from keyframe.pretrained import shipped_autoencoder

    ae = shipped_autoencoder(name)
    if ae.config() != config:
        raise UserError(
            f"{where}: uses the shipped autoencoder {name!r}, but that one has config "
            f"{ae.config()}, not {config} (the shipped models are out of step; reinstall)"
        )
    return ae


def save_autoencoder(
    ae: Autoencoder, directory: str | os.PathLike, fp16: bool = False, overwrite: bool = False
) -> Path:
    """Write `autoencoder.json` (kind + constructor args incl. the latent scale) and, for a trained
    autoencoder, `autoencoder.safetensors` (fp16 weights if asked), atomically. Returns the dir."""
    from safetensors.torch import save_file

    directory = Path(directory)
    existing = [p for p in (directory / CONFIG_NAME, directory / WEIGHTS_NAME) if p.exists()]
    if existing and not overwrite:
        raise UserError(f"{existing[0]}: already exists (pass overwrite=True to replace it)")
    directory.mkdir(parents=True, exist_ok=True)
    if not isinstance(ae, IdentityAutoencoder):
        state = {}
        for key, value in ae.state_dict().items():
            value = value.detach().cpu()
            if fp16 and value.is_floating_point() and key not in ("latent_scale", "latent_shift"):
                value = value.half()
            state[key] = value.contiguous()
        atomic_write(directory / WEIGHTS_NAME, lambda tmp: save_file(state, tmp))
    meta = {"format_version": FORMAT_VERSION, **autoencoder_record(ae)}
    text = json.dumps(meta, indent=2) + "\n"
    atomic_write(directory / CONFIG_NAME, lambda tmp: Path(tmp).write_text(text))
    return directory


def _load_checkpoint(path: Path) -> FrameAutoencoder:
    """Rebuild the autoencoder from an AutoencoderModule Lightning checkpoint."""
    ckpt = load_checkpoint(path, "autoencoder checkpoint")
    try:
        hparams = ckpt["hyper_parameters"]
        names = inspect.signature(FrameAutoencoder).parameters
        ae = FrameAutoencoder(**{k: hparams[k] for k in names if k in hparams})
        prefix = "autoencoder."
        state = {k[len(prefix) :]: v for k, v in ckpt["state_dict"].items() if k.startswith(prefix)}
        ae.load_state_dict(state)
    except Exception as err:
        detail = " ".join(str(err).split())[:200]
        raise UserError(f"{path}: not a readable autoencoder checkpoint ({detail})") from None
    return ae


def load_autoencoder(path: str | os.PathLike, device: str | torch.device = "cpu") -> Autoencoder:
    """Load 'identity', a directory written by `save_autoencoder`, its json or safetensors file,
    an AutoencoderModule `.ckpt`, or the name of a shipped keyframe model (its autoencoder); in
    eval mode on `device`."""
    if str(path) == "identity":
        return IdentityAutoencoder()
    path = Path(path)
    if path.suffix == ".ckpt":
        if not path.is_file():
            raise UserError(f"{path}: autoencoder checkpoint not found")
        return _load_checkpoint(path).to(device).eval()
    if not path.exists() and len(path.parts) == 1 and not path.suffix:
        from keyframe.pretrained import shipped_autoencoder  # a name: the shipped models' own

        return shipped_autoencoder(str(path)).to(device).eval()
    if path.is_dir():
        config_path, weights_path = path / CONFIG_NAME, path / WEIGHTS_NAME
    else:
        config_path, weights_path = path.with_suffix(".json"), path.with_suffix(".safetensors")
    if not config_path.is_file():
        raise UserError(
            f"{config_path}: autoencoder config not found (expected a directory with "
            f"{CONFIG_NAME} and {WEIGHTS_NAME}, a .ckpt, or 'identity')"
        )
    try:
        record = json.loads(config_path.read_text())
    except (OSError, ValueError) as err:
        raise UserError(f"{config_path}: unreadable autoencoder config ({err})") from err
    ae = build_autoencoder(record, config_path)
    if isinstance(ae, IdentityAutoencoder):
        return ae
    if not weights_path.is_file():
        raise UserError(f"{weights_path}: autoencoder weights not found")
    from safetensors.torch import load_file

    try:
        ae.load_state_dict(load_file(weights_path))
    except Exception as err:
        raise UserError(f"{weights_path}: unreadable autoencoder weights ({err})") from err
    return ae.to(device).eval()
