"""The diffusion stages' model folders: the `keyframe` kind of keyframe.hub, and the writer and
reader the `interpolate` kind shares.

A folder holds `model.safetensors` (the EMA U-Net as `net.*`, the text tower as `text.*`, the
frame autoencoder as `autoencoder.*`) and `config.json` (kind, format version, the module's
hyperparameters, the autoencoder's architecture). Loading also reads a Lightning `.ckpt`, or the
name of a model shipped in `keyframe/weights/<name>/`. Loaded models hold the EMA weights as
their only weights (EMA off), in eval mode. Load and save through keyframe.hub
(`hub.from_pretrained(name, kind="keyframe")`); `from_pretrained` here is that call.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, TypeVar

import torch

from keyframe import hub
from keyframe import int8 as int8_weights
from keyframe.autoencoder import Autoencoder
from keyframe.autoencoder_files import (
    autoencoder_record,
    build_autoencoder,
    first_different_weight,
)
from keyframe.errors import UserError
from keyframe.files import load_checkpoint
from keyframe.model import KeyframeModel
from keyframe.module import KeyframeModule
from keyframe.pipeline import KeyframePipeline
from keyframe.placement import placement_for

WEIGHTS_NAME, CONFIG_NAME = hub.WEIGHTS_NAME, hub.CONFIG_NAME
FORMAT_VERSION = 1
SHIPPED_DIR = Path(__file__).resolve().parent / "weights"
PARTS = ("net", "text", "autoencoder")
_FLOAT32_KEYS = ("autoencoder.latent_scale", "autoencoder.latent_shift")
M = TypeVar("M", bound=torch.nn.Module)
_KINDS = {"KeyframeModule": "keyframe", "InterpolateModule": "interpolate"}  # hub kinds
_CLASSES = {kind: model for model, kind in _KINDS.items()}


def sampling_state_dict(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The weights sampling needs, from a stage module's or model's state dict: `net.*` (the EMA
    U-Net when there is one), `text.*` (the EMA text tower when there is one) and
    `autoencoder.*`. A KeyframeModule keeps its network under `model.`."""
    base = "model." if any(k.startswith("model.denoiser.") for k in state) else ""
    ema_net = any(k.startswith("ema_net.") for k in state)
    ema_text = any(k.startswith("ema_text.") for k in state)
    sources = {
        "net.": "ema_net." if ema_net else base + "denoiser.net.",
        "text.": "ema_text." if ema_text else base + "text.",
        "autoencoder.": base + "autoencoder.",
    }
    out = {}
    for target, source in sources.items():
        for key, value in state.items():
            if key.startswith(source):
                out[target + key[len(source) :]] = value
    return out


def save_keyframe(
    model: KeyframePipeline | KeyframeModule,
    directory: str | os.PathLike,
    fp16: bool = True,
    overwrite: bool = False,
    shared_autoencoder: str | None = None,
    int8: bool = False,
) -> Path:
    """Write `directory/model.safetensors` (sampling weights, fp16 if asked; the latent scale
    and shift stay float32) and `directory/config.json`, each atomically. Returns the directory.
    A trainer saves its EMA weights and all its hyperparameters. `shared_autoencoder`, `int8`:
    see `write_pretrained`. The `keyframe` kind's saver."""
    if isinstance(model, KeyframeModule):
        hparams, model = model.hparams, model.pipeline()
    else:
        hparams = model.config.to_dict()
    return write_pretrained(
        directory, model.model, "KeyframeModule", hparams, fp16, overwrite, shared_autoencoder,
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
    directory = hub.prepare_folder(Path(directory), overwrite)
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
    hub.write_weights(directory, state)
    hub.write_config(directory, _KINDS[model], config)
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
    """Names of the models shipped in `shipped_dir` (default keyframe/weights/)."""
    return hub.shipped_models(SHIPPED_DIR if shipped_dir is None else shipped_dir)


def resolve_model(name_or_path: str | os.PathLike) -> Path:
    """The folder or .ckpt a keyframe model name or path refers to; a path wins over a name."""
    return hub.resolve(name_or_path, "keyframe")


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
    return model_autoencoder(shipped_dir / name)


def model_autoencoder(folder: Path) -> Autoencoder:
    """The frame autoencoder inside a keyframe or interpolation model folder (a shared one from
    the shipped model it names), float32: how models share one autoencoder."""
    kind = hub.read_config(folder)[1]
    _, record, weights = read_directory(folder, _CLASSES.get(kind, kind))
    ae = build_autoencoder(record, folder / CONFIG_NAME)
    if not (isinstance(record, Mapping) and record.get("kind") == "shipped"):
        load_weights({"autoencoder": ae}, weights, folder)
    return ae.float()


def _check_known(hparams: Any, names: set[str], where: Path) -> None:
    """UserError unless `hparams` is a mapping of names among `names` (or private ones)."""
    if not isinstance(hparams, Mapping):
        raise UserError(f"{where}: no hyperparameters found")
    unknown = sorted(k for k in hparams if k not in names and not k.startswith("_"))
    if unknown:
        raise UserError(
            f"{where}: unknown hyperparameters {', '.join(unknown)} (written by another version?)"
        )


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
    config_path = directory / CONFIG_NAME
    config = hub.read_config(directory)[0]
    try:
        version, found = config["format_version"], config.get("model")
        hparams, ae_record = config["hyperparameters"], config["autoencoder"]
    except (KeyError, TypeError) as err:
        raise UserError(f"{config_path}: unreadable model config ({err})") from None
    if found != model:
        raise UserError(f"{config_path}: holds a {found}, expected {model}")
    if version != FORMAT_VERSION:
        raise UserError(
            f"{config_path}: format_version {version}, this animatic reads {FORMAT_VERSION}"
        )
    return hparams, ae_record, hub.read_weights(directory, int8_weights.dequantize)


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


def read_model(path: Path, model: str) -> tuple[Any, Any, dict]:
    """Hyperparameters, autoencoder record and sampling weights of a `model` (a class name)
    from a folder or a .ckpt."""
    if path.is_dir():
        return read_directory(path, model)
    if path.is_file():
        return read_checkpoint(path, model)
    raise UserError(f"{path}: expected a model folder or a .ckpt file")


def _with_weights(model: M, ae_record: Any, weights: Mapping, path: Path) -> M:
    """`model` (its net, text and autoencoder) holding `weights`, float32, frozen, eval mode."""
    parts = {"net": model.denoiser.net, "text": model.text, "autoencoder": model.autoencoder}
    if isinstance(ae_record, Mapping) and ae_record.get("kind") == "shipped":
        del parts["autoencoder"]  # loaded with its weights from the shipped keyframe model
    load_weights(parts, weights, path)
    # Inference only; frozen weights also take the same attention kernels as the EMA copies a
    # training module samples with, so a checkpoint and its export draw identical images.
    return model.requires_grad_(False).float().eval()


def load_stage(path: Path, trainer: type, model_cls: type[M], device: Any = "cpu") -> M:
    """A stage model (`model_cls` from the trainer's CONFIG) ready to sample, from a folder or
    .ckpt written for `trainer` (its class): the sampling weights its only weights, float32, frozen,
    in eval mode, on `device`. Training options among the hyperparameters are ignored; nothing
    is read from the files it was trained with (the text tower's weights come from the file)."""
    hparams, ae_record, weights = read_model(path, trainer.__name__)
    _check_known(hparams, trainer.option_names(), path)
    config = trainer.CONFIG.from_dict(hparams).replace(text_pretrained=None)
    ae = build_autoencoder(ae_record, path) if ae_record is not None else None
    try:
        model = model_cls(config, ae)
    except TypeError as err:
        raise UserError(f"{path}: bad hyperparameters ({err})") from None
    return _with_weights(model, ae_record, weights, path).to(device)


def load_keyframe(path: Path, device: str | torch.device = "cpu") -> KeyframePipeline:
    """The `keyframe` kind's loader: a KeyframePipeline from a folder or .ckpt, with the
    plug-ins its config asks for (keyframe.placement)."""
    model = load_stage(path, KeyframeModule, KeyframeModel, device)
    return KeyframePipeline(model, placement_for(model.config))


def from_pretrained(name_or_path: str | os.PathLike, device: str | torch.device = "cpu"):
    """A KeyframePipeline ready to sample, from a pretrained folder, a Lightning .ckpt, or the name
    of a shipped model; on `device`, in eval mode, float32, with gradients off. The same as
    `hub.from_pretrained(name_or_path, kind="keyframe", device=device)`."""
    return hub.from_pretrained(name_or_path, "keyframe", device)


def save_pretrained(
    module: KeyframePipeline | KeyframeModule, directory: str | os.PathLike, **options: Any
) -> Path:
    """`hub.save_pretrained(module, directory, **options)`; options: see `save_keyframe`."""
    return hub.save_pretrained(module, directory, **options)
