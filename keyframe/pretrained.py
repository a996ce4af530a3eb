"""Keyframe models for inference: one safetensors file of sampling weights plus a JSON config.

A pretrained directory holds `model.safetensors` (the EMA U-Net as `net.*`, the text tower as
`text.*`, the frame autoencoder as `autoencoder.*`) and `config.json` (format version, the
module's hyperparameters, the autoencoder's architecture). `from_pretrained` also reads a Lightning
`.ckpt` of KeyframeModule, or the name of a model shipped in `keyframe/weights/<name>/`.
Loaded models hold the EMA weights as their only weights (EMA off), in eval mode.
The interpolation stage uses the same layout and the same writers and readers here
(`write_pretrained`, `load_pretrained`, `resolve_model` with its own shipped folder).
"""

from __future__ import annotations

import inspect
import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, TypeVar

import torch

from keyframe import int8 as int8_weights
from keyframe.autoencoder import Autoencoder
from keyframe.autoencoder_files import (
    autoencoder_record,
    build_autoencoder,
    first_different_weight,
)
from keyframe.errors import UserError
from keyframe.files import atomic_write, load_checkpoint
from keyframe.module import KeyframeModule
from keyframe.stage import prebuilt_autoencoder

WEIGHTS_NAME = "model.safetensors"
CONFIG_NAME = "config.json"
FORMAT_VERSION = 1
SHIPPED_DIR = Path(__file__).resolve().parent / "weights"
PARTS = ("net", "text", "autoencoder")
_FLOAT32_KEYS = ("autoencoder.latent_scale", "autoencoder.latent_shift")
M = TypeVar("M", bound=torch.nn.Module)


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


def save_pretrained(
    module: KeyframeModule,
    directory: str | os.PathLike,
    fp16: bool = True,
    overwrite: bool = False,
    shared_autoencoder: str | None = None,
    int8: bool = False,
) -> Path:
    """Write `directory/model.safetensors` (sampling weights, fp16 if asked; the latent scale
    and shift stay float32) and `directory/config.json`, each atomically. Returns the directory.
    `shared_autoencoder`, `int8`: see `write_pretrained`."""
    return write_pretrained(
        directory, module, "KeyframeModule", module.hparams, fp16, overwrite, shared_autoencoder,
        int8,
    )  # fmt: skip


def write_pretrained(
    directory: str | os.PathLike,
    module: torch.nn.Module,
    model: str,
    hparams: Mapping[str, Any],
    fp16: bool = True,
    overwrite: bool = False,
    shared_autoencoder: str | None = None,
    int8: bool = False,
) -> Path:
    """Write a stage module (`model` names its class) as a pretrained folder: its sampling
    weights (see `sampling_state_dict`) and a config.json of `hparams` and its autoencoder's
    architecture. Refuses to replace existing files unless `overwrite`. Returns the directory.

    `shared_autoencoder` names a shipped keyframe model whose autoencoder equals this module's
    (checked): its weights are then left out and loaded from there, so they ship once. `int8`
    stores the diffusion networks' weight matrices as int8 with per-channel scales (the rest
    fp16; see keyframe.int8): about half the size."""
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
    ae_record = autoencoder_record(module.autoencoder)
    if shared_autoencoder is not None:
        _check_same_autoencoder(module.autoencoder, shared_autoencoder)
        state = {k: v for k, v in state.items() if not k.startswith("autoencoder.")}
        ae_record = {"kind": "shipped", "name": shared_autoencoder, "config": ae_record["config"]}
    if int8:
        state = int8_weights.quantize(state)
    config = {
        "format_version": FORMAT_VERSION,
        "model": model,
        "hyperparameters": json.loads(json.dumps(dict(hparams))),  # tuples become lists
        "autoencoder": ae_record,
        "dtype": "int8" if int8 else "float16" if fp16 else "float32",
    }
    atomic_write(targets[0], lambda tmp: save_file(state, str(tmp), metadata={"format": "pt"}))
    text = json.dumps(config, indent=2) + "\n"
    atomic_write(targets[1], lambda tmp: tmp.write_text(text, encoding="utf-8"))
    return directory


def _check_same_autoencoder(ae: Autoencoder, name: str) -> None:
    """`ae` must equal the shipped autoencoder `name` (to fp16 precision, as shipped)."""
    shipped = shipped_autoencoder(name)
    if shipped.config() != ae.config() or first_different_weight(ae, shipped, fp16=True):
        raise UserError(
            f"shared autoencoder {name!r}: the shipped one differs from this model's; export "
            "the keyframe model with the same autoencoder first"
        )


def shipped_models(shipped_dir: Path | None = None) -> list[str]:
    """Names of the models shipped in `shipped_dir` (default keyframe/weights/): its folders
    with a config.json."""
    shipped_dir = SHIPPED_DIR if shipped_dir is None else shipped_dir
    if not shipped_dir.is_dir():
        return []
    return sorted(p.name for p in shipped_dir.iterdir() if (p / CONFIG_NAME).is_file())


def resolve_model(
    name_or_path: str | os.PathLike, shipped_dir: Path | None = None, what: str = "model"
) -> Path:
    """The directory or .ckpt file a model name or path refers to; a path wins over a name.
    Names are looked up in `shipped_dir` (default keyframe/weights/); `what` names the kind of
    model in the error."""
    shipped_dir = SHIPPED_DIR if shipped_dir is None else shipped_dir
    path = Path(name_or_path).expanduser()
    if path.exists():
        return path
    shipped = shipped_models(shipped_dir)
    if str(name_or_path) in shipped:
        return shipped_dir / str(name_or_path)
    available = ", ".join(shipped) if shipped else "none are shipped yet"
    raise UserError(
        f"model {str(name_or_path)!r}: no such file or folder, and not a shipped {what} name "
        f"(available: {available}); give a folder written by save_pretrained or a training .ckpt"
    )


def shipped_autoencoder(name: str, shipped_dir: Path | None = None) -> Autoencoder:
    """The frame autoencoder inside the shipped keyframe model `name` (not a separate file, so
    the weights ship once): what `autoencoder: shapes` in a config refers to."""
    shipped_dir = SHIPPED_DIR if shipped_dir is None else shipped_dir
    if name not in shipped_models(shipped_dir):
        available = ", ".join(shipped_models(shipped_dir)) or "none are shipped yet"
        raise UserError(
            f"autoencoder {name!r}: no such file or folder, and not a shipped model name "
            f"(available: {available}); give 'identity', an autoencoder folder or a .ckpt"
        )
    _, record, weights = read_directory(shipped_dir / name, "KeyframeModule")
    ae = build_autoencoder(record, shipped_dir / name / CONFIG_NAME)
    load_weights({"autoencoder": ae}, weights, shipped_dir / name)
    return ae.float()


def build_module(cls: type[M], hparams: Any, ae_record: Any, where: Path, **overrides: Any) -> M:
    """A stage module of class `cls` with these hyperparameters (and `overrides`) for inference,
    its autoencoder built from `ae_record` (None: an older checkpoint; read it from where it
    was). The weights come from the checkpoint, not from the files it was trained with."""
    if not isinstance(hparams, Mapping):
        raise UserError(f"{where}: no hyperparameters found")
    names = set(inspect.signature(cls).parameters)
    unknown = sorted(k for k in hparams if k not in names and not k.startswith("_"))
    if unknown:
        raise UserError(
            f"{where}: unknown hyperparameters {', '.join(unknown)} (written by another version?)"
        )
    kwargs = {k: v for k, v in hparams.items() if k in names}
    kwargs.update(overrides)
    ae = build_autoencoder(ae_record, where) if ae_record is not None else None
    try:
        if ae is None:
            return cls(**kwargs)
        with prebuilt_autoencoder(ae):
            return cls(**kwargs)
    except TypeError as err:
        raise UserError(f"{where}: bad hyperparameters ({err})") from None


def load_weights(
    parts: Mapping[str, torch.nn.Module | None], weights: Mapping[str, torch.Tensor], where: Path
) -> None:
    """Load `weights` (keys `part.*`) into each part; a part that is None must have none."""
    for part, target in parts.items():
        prefix = part + "."
        state = {k[len(prefix) :]: v for k, v in weights.items() if k.startswith(prefix)}
        if target is None:
            if state:
                raise UserError(f"{where}: has {part} weights the config does not use")
            continue
        try:
            target.load_state_dict(state, strict=True)
        except RuntimeError as err:
            detail = " ".join(str(err).split())[:300]
            raise UserError(f"{where}: {part} weights do not fit the config ({detail})") from None


def read_directory(directory: Path, model: str) -> tuple[Any, Any, dict]:
    """Hyperparameters, autoencoder record and sampling weights from a folder written by
    `write_pretrained` for a `model` (a class name); a folder holding another is refused."""
    config_path, weights_path = directory / CONFIG_NAME, directory / WEIGHTS_NAME
    for path in (config_path, weights_path):
        if not path.is_file():
            raise UserError(
                f"{path}: not found (a model folder holds {CONFIG_NAME} and {WEIGHTS_NAME})"
            )
    try:
        config = json.loads(config_path.read_text(encoding="utf-8"))
        version, found = config["format_version"], config.get("model")
        hparams, ae_record = config["hyperparameters"], config["autoencoder"]
    except (OSError, UnicodeDecodeError, ValueError, KeyError, TypeError) as err:
        raise UserError(f"{config_path}: unreadable model config ({err})") from None
    if found != model:
        raise UserError(f"{config_path}: holds a {found}, expected {model}")
    if version != FORMAT_VERSION:
        raise UserError(
            f"{config_path}: format_version {version}, this animatic reads {FORMAT_VERSION}"
        )
    from safetensors.torch import load_file

    try:
        weights = int8_weights.dequantize(load_file(str(weights_path)))
    except Exception as err:
        raise UserError(f"{weights_path}: unreadable weights ({err})") from None
    return hparams, ae_record, weights


def read_checkpoint(path: Path, model: str) -> tuple[Any, Any, dict]:
    """Hyperparameters, autoencoder record (None if older) and sampling weights from a
    Lightning .ckpt of a `model` (its class name, for the error)."""
    ckpt = load_checkpoint(path, f"{model} checkpoint")
    try:
        hparams, state = ckpt["hyper_parameters"], ckpt["state_dict"]
    except Exception as err:
        detail = " ".join(str(err).split())[:200]
        raise UserError(f"{path}: not a readable {model} checkpoint ({detail})") from None
    return hparams, ckpt.get("autoencoder_config"), sampling_state_dict(state)


def load_pretrained(
    cls: type[M], path: Path, device: str | torch.device = "cpu", **overrides: Any
) -> M:
    """A stage module of class `cls` ready to sample, from the folder or .ckpt at `path` (see
    `resolve_model`): built with `overrides` (EMA off, nothing read from training files), the
    sampling weights its only weights; on `device`, in eval mode, float32, gradients off."""
    if path.is_dir():
        hparams, ae_record, weights = read_directory(path, cls.__name__)
    elif path.is_file():
        hparams, ae_record, weights = read_checkpoint(path, cls.__name__)
    else:
        raise UserError(f"{path}: expected a model folder or a .ckpt file")
    module = build_module(cls, hparams, ae_record, path, **overrides)
    parts = {"net": module.denoiser.net, "text": module.text, "autoencoder": module.autoencoder}
    if isinstance(ae_record, Mapping) and ae_record.get("kind") == "shipped":
        del parts["autoencoder"]  # loaded with its weights from the shipped keyframe model
    load_weights(parts, weights, path)
    # Inference only; frozen weights also take the same attention kernels as the EMA copies a
    # training module samples with, so a checkpoint and its export draw identical images.
    return module.requires_grad_(False).float().to(device).eval()


def from_pretrained(name_or_path: str | os.PathLike, device: str | torch.device = "cpu"):
    """A KeyframeModule ready to sample, from a pretrained folder, a Lightning .ckpt, or the name
    of a shipped model; on `device`, in eval mode, float32, with gradients off."""
    path = resolve_model(name_or_path)
    return load_pretrained(
        KeyframeModule, path, device, ema_decay=0.0, text_pretrained=None, init_from=None
    )
