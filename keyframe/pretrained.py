"""Keyframe models for inference: one safetensors file of sampling weights plus a JSON config.

A pretrained directory holds `model.safetensors` (the EMA U-Net as `net.*`, the text tower as
`text.*`, the frame autoencoder as `autoencoder.*`) and `config.json` (format version, the
module's hyperparameters, the autoencoder's architecture). `from_pretrained` also reads a Lightning
`.ckpt` of KeyframeModule, or the name of a model shipped in `keyframe/weights/<name>/`.
Loaded models hold the EMA weights as their only weights (EMA off), in eval mode.
"""

from __future__ import annotations

import inspect
import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from keyframe.autoencoder import FrameAutoencoder, IdentityAutoencoder
from keyframe.errors import UserError
from keyframe.module import KeyframeModule, prebuilt_autoencoder

WEIGHTS_NAME = "model.safetensors"
CONFIG_NAME = "config.json"
FORMAT_VERSION = 1
SHIPPED_DIR = Path(__file__).resolve().parent / "weights"
PARTS = ("net", "text", "autoencoder")
_FLOAT32_KEYS = ("autoencoder.latent_scale", "autoencoder.latent_shift")


def sampling_state_dict(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The weights sampling needs, from a KeyframeModule state dict: `net.*` (the EMA U-Net when
    there is one), `text.*` (the EMA text tower when there is one) and `autoencoder.*`."""
    ema_net = any(k.startswith("ema_net.") for k in state)
    ema_text = any(k.startswith("ema_text.") for k in state)
    sources = {
        "net.": "ema_net." if ema_net else "denoiser.net.",
        "text.": "ema_text." if ema_text else "text.",
        "autoencoder.": "autoencoder.",
    }
    out = {}
    for target, source in sources.items():
        for key, value in state.items():
            if key.startswith(source):
                out[target + key[len(source) :]] = value
    return out


def _plain(hparams: Mapping[str, Any]) -> dict[str, Any]:
    """Hyperparameters as JSON-able plain values (tuples become lists)."""
    return json.loads(json.dumps(dict(hparams)))


def save_pretrained(
    module: KeyframeModule,
    directory: str | os.PathLike,
    fp16: bool = True,
    overwrite: bool = False,
) -> Path:
    """Write `directory/model.safetensors` (sampling weights, fp16 if asked; the latent scale
    and shift stay float32) and `directory/config.json`, each atomically. Returns the directory."""
    from safetensors.torch import save_file

    directory = Path(directory)
    targets = (directory / WEIGHTS_NAME, directory / CONFIG_NAME)
    existing = [p for p in targets if p.exists()]
    if existing and not overwrite:
        raise UserError(f"{existing[0]}: already exists (pass overwrite=True to replace it)")
    if directory.exists() and not directory.is_dir():
        raise UserError(f"{directory}: is a file; expected a folder for the model")
    directory.mkdir(parents=True, exist_ok=True)

    state = {}
    for key, value in sampling_state_dict(module.state_dict()).items():
        value = value.detach().cpu()
        if fp16 and value.is_floating_point() and key not in _FLOAT32_KEYS:
            value = value.half()
        state[key] = value.contiguous().clone()  # no shared storage: safetensors refuses it
    ae = module.autoencoder
    config = {
        "format_version": FORMAT_VERSION,
        "model": "KeyframeModule",
        "hyperparameters": _plain(module.hparams),
        "autoencoder": {"kind": ae.kind, "config": ae.config()},
        "dtype": "float16" if fp16 else "float32",
    }
    _atomic_write(targets[0], lambda tmp: save_file(state, str(tmp), metadata={"format": "pt"}))
    text = json.dumps(config, indent=2) + "\n"
    _atomic_write(targets[1], lambda tmp: tmp.write_text(text, encoding="utf-8"))
    return directory


def _atomic_write(path: Path, write) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        write(tmp)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # safetensors writes 0600; give the usual permissions
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def shipped_models() -> list[str]:
    """Names of the models shipped in keyframe/weights/ (folders with a config.json)."""
    if not SHIPPED_DIR.is_dir():
        return []
    return sorted(p.name for p in SHIPPED_DIR.iterdir() if (p / CONFIG_NAME).is_file())


def resolve_model(name_or_path: str | os.PathLike) -> Path:
    """The directory or .ckpt file a model name or path refers to; a path wins over a name."""
    path = Path(name_or_path).expanduser()
    if path.exists():
        return path
    shipped = shipped_models()
    if str(name_or_path) in shipped:
        return SHIPPED_DIR / str(name_or_path)
    available = ", ".join(shipped) if shipped else "none are shipped yet"
    raise UserError(
        f"model {str(name_or_path)!r}: no such file or folder, and not a shipped model name "
        f"(available: {available})"
    )


def _build_autoencoder(meta: Any, where: Path):
    try:
        kind, config = meta["kind"], dict(meta["config"])
        if kind == "identity":
            return IdentityAutoencoder(**config)
        if kind == "kl":
            return FrameAutoencoder(**config)
    except (KeyError, TypeError, ValueError) as err:
        raise UserError(f"{where}: bad autoencoder config ({err})") from None
    raise UserError(f"{where}: unknown autoencoder kind {kind!r} (expected kl or identity)")


def _build_module(hparams: Mapping[str, Any], ae_meta: Any, where: Path) -> KeyframeModule:
    """A KeyframeModule with these hyperparameters for inference: EMA off, and nothing read from
    the files it was trained with (the weights come from the checkpoint)."""
    if not isinstance(hparams, Mapping):
        raise UserError(f"{where}: no hyperparameters found")
    names = set(inspect.signature(KeyframeModule).parameters)
    unknown = sorted(k for k in hparams if k not in names and not k.startswith("_"))
    if unknown:
        raise UserError(
            f"{where}: unknown hyperparameters {', '.join(unknown)} (written by another version?)"
        )
    kwargs = {k: v for k, v in hparams.items() if k in names}
    kwargs.update(ema_decay=0.0, text_pretrained=None)
    ae = _build_autoencoder(ae_meta, where) if ae_meta is not None else None
    try:
        if ae is None:  # an older checkpoint: read the autoencoder from where it was
            return KeyframeModule(**kwargs)
        with prebuilt_autoencoder(ae):
            return KeyframeModule(**kwargs)
    except TypeError as err:
        raise UserError(f"{where}: bad hyperparameters ({err})") from None


def _load_weights(module: KeyframeModule, weights: Mapping[str, torch.Tensor], where: Path) -> None:
    targets = {"net": module.denoiser.net, "text": module.text, "autoencoder": module.autoencoder}
    for part, target in targets.items():
        prefix = part + "."
        state = {k[len(prefix) :]: v for k, v in weights.items() if k.startswith(prefix)}
        try:
            target.load_state_dict(state, strict=True)
        except RuntimeError as err:
            detail = " ".join(str(err).split())[:300]
            raise UserError(f"{where}: {part} weights do not fit the config ({detail})") from None


def _read_directory(directory: Path) -> tuple[dict, Any, dict]:
    config_path, weights_path = directory / CONFIG_NAME, directory / WEIGHTS_NAME
    for path in (config_path, weights_path):
        if not path.is_file():
            raise UserError(
                f"{path}: not found (a model folder holds {CONFIG_NAME} and {WEIGHTS_NAME})"
            )
    try:
        config = json.loads(config_path.read_text(encoding="utf-8"))
        version = config["format_version"]
        hparams, ae_meta = config["hyperparameters"], config["autoencoder"]
    except (OSError, UnicodeDecodeError, ValueError, KeyError, TypeError) as err:
        raise UserError(f"{config_path}: unreadable model config ({err})") from None
    if version != FORMAT_VERSION:
        raise UserError(
            f"{config_path}: format_version {version}, this animatic reads {FORMAT_VERSION}"
        )
    from safetensors.torch import load_file

    try:
        weights = load_file(str(weights_path))
    except Exception as err:
        raise UserError(f"{weights_path}: unreadable weights ({err})") from None
    return hparams, ae_meta, weights


def _read_checkpoint(path: Path) -> tuple[dict, Any, dict]:
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
        hparams, state = ckpt["hyper_parameters"], ckpt["state_dict"]
    except Exception as err:
        detail = " ".join(str(err).split())[:200]
        raise UserError(f"{path}: not a readable KeyframeModule checkpoint ({detail})") from None
    return hparams, ckpt.get("autoencoder_config"), sampling_state_dict(state)


def from_pretrained(name_or_path: str | os.PathLike, device: str | torch.device = "cpu"):
    """A KeyframeModule ready to sample, from a pretrained folder, a Lightning .ckpt, or the name
    of a shipped model; on `device`, in eval mode, float32, with gradients off."""
    path = resolve_model(name_or_path)
    if path.is_dir():
        hparams, ae_meta, weights = _read_directory(path)
    elif path.is_file():
        hparams, ae_meta, weights = _read_checkpoint(path)
    else:
        raise UserError(f"{path}: expected a model folder or a .ckpt file")
    module = _build_module(hparams, ae_meta, path)
    _load_weights(module, weights, path)
    # Inference only; frozen weights also take the same attention kernels as the EMA copies a
    # training module samples with, so a checkpoint and its export draw identical images.
    return module.requires_grad_(False).float().to(device).eval()
