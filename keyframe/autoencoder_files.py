"""Autoencoder files: the {"kind", "config"} record that checkpoints and model configs store,
the `autoencoder` kind of keyframe.hub (`save_autoencoder`; `load_autoencoder` reads 'identity', a
folder, a training `.ckpt`, or the autoencoder inside a keyframe or interpolation model folder or
shipped model), and the weight comparison that shared autoencoders need."""

from __future__ import annotations

import inspect
import json
import os
from pathlib import Path
from typing import Any

import torch

from keyframe import hub
from keyframe.autoencoder import Autoencoder, FrameAutoencoder, IdentityAutoencoder
from keyframe.errors import UserError
from keyframe.files import load_checkpoint

LEGACY_WEIGHTS, LEGACY_CONFIG = "autoencoder.safetensors", "autoencoder.json"  # read, not written
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
    """The `autoencoder` kind's saver: `config.json` (kind, and the autoencoder's record with
    its constructor args incl. the latent scale) and, for a trained autoencoder,
    `model.safetensors` (fp16 weights if asked), atomically. Returns the folder."""
    directory = hub.prepare_folder(Path(directory), overwrite)
    if not isinstance(ae, IdentityAutoencoder):
        state = {}
        for key, value in ae.state_dict().items():
            value = value.detach().cpu()
            if fp16 and value.is_floating_point() and key not in ("latent_scale", "latent_shift"):
                value = value.half()
            state[key] = value.contiguous()
        hub.write_weights(directory, state)
    config = {"format_version": FORMAT_VERSION, "autoencoder": autoencoder_record(ae)}
    hub.write_config(directory, "autoencoder", config)
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
    """Load 'identity', or through keyframe.hub (`load_autoencoder_path`): an autoencoder
    folder or a file of it, an AutoencoderModule `.ckpt`, or the autoencoder inside a keyframe
    or interpolation model folder or shipped model (by name); in eval mode on `device`."""
    if str(path) == "identity":
        return IdentityAutoencoder()
    if Path(path).suffix == ".ckpt" and not Path(path).is_file():
        raise UserError(f"{path}: autoencoder checkpoint not found")
    return hub.from_pretrained(path, "autoencoder", device)


def load_autoencoder_path(path: Path, device: str | torch.device = "cpu") -> Autoencoder:
    """The `autoencoder` kind's loader for a resolved `path` (see `load_autoencoder`)."""
    if path.suffix == ".ckpt":
        return _load_checkpoint(path).to(device).eval()
    if path.is_file() and path.name not in (hub.CONFIG_NAME, hub.WEIGHTS_NAME):
        return _load_files(path.with_suffix(".json"), path.with_suffix(".safetensors"), device)
    folder = path.parent if path.is_file() else path
    config, kind = hub.read_config(folder)
    if kind != "autoencoder":  # a model folder: its own autoencoder (how models share one)
        from keyframe.pretrained import model_autoencoder

        return model_autoencoder(folder).to(device).eval()
    if not (folder / hub.CONFIG_NAME).is_file():  # written before config.json
        return _load_files(folder / LEGACY_CONFIG, folder / LEGACY_WEIGHTS, device)
    record = config.get("autoencoder")
    return _load_files(folder / hub.CONFIG_NAME, folder / hub.WEIGHTS_NAME, device, record)


def _load_files(
    config_path: Path, weights_path: Path, device: str | torch.device, record: Any = None
) -> Autoencoder:
    """An autoencoder from its config (or its `record` from there) and weights files."""
    if record is None:
        if not config_path.is_file():
            raise UserError(
                f"{config_path}: autoencoder config not found (expected a folder with "
                f"{hub.CONFIG_NAME} and {hub.WEIGHTS_NAME}, a .ckpt, or 'identity')"
            )
        try:
            record = json.loads(config_path.read_text())
        except (OSError, ValueError) as err:
            raise UserError(f"{config_path}: unreadable autoencoder config ({err})") from None
    ae = build_autoencoder(record, config_path)
    if isinstance(ae, IdentityAutoencoder):
        return ae
    if not weights_path.is_file():
        raise UserError(f"{weights_path}: autoencoder weights not found")
    from safetensors.torch import load_file

    try:
        ae.load_state_dict(load_file(weights_path))
    except Exception as err:
        raise UserError(f"{weights_path}: unreadable autoencoder weights ({err})") from None
    return ae.to(device).eval()
