"""One save format and one loader for every model component.

A saved component is a folder: `config.json`, whose "kind" names the component (keyframe,
interpolate, motion, general or autoencoder; the rest is that kind's own config), and
`model.safetensors`, its weights. The shipped models are such folders under keyframe/weights/
and interpolate/weights/, and a name resolves to one of them.

    from keyframe import hub
    import interpolate  # registers the interpolate, motion and general kinds (see below)

    hub.save_pretrained(model, "out/mine")                     # any component; kind from its class
    model = hub.from_pretrained("out/mine", device="cuda")     # dispatches on config.json's kind
    tween = hub.from_pretrained("shapes", kind="interpolate")  # "shapes" names two shipped models
    ae = hub.from_pretrained("shapes", kind="autoencoder")     # a diffusion model's own autoencoder

Each kind is registered here by name ("module:attribute" strings, imported when first used):
keyframe's and the autoencoder's below, the interpolation stage's by `interpolate/__init__.py`,
because keyframe never imports interpolate. Folders written before configs had a "kind" (the
shipped ones among them, kept byte-identical) get theirs from their other fields (`infer_kind`).
"""

from __future__ import annotations

import importlib
import json
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from keyframe.errors import UserError

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
KIND_NAMES = ("keyframe", "interpolate", "motion", "general", "autoencoder")
_LEGACY_MODELS = {"KeyframeModule": "keyframe", "InterpolateModule": "interpolate"}
_LEGACY_CONFIG = "autoencoder.json"  # autoencoder folders written before config.json


@dataclass(frozen=True)
class Kind:
    """A component's entry: `cls`, `load`, `save` and `shipped_dir` are "module:attribute"
    strings. load(path, device) -> object; save(object, folder, **options) -> folder."""

    name: str
    cls: str | tuple[str, ...]  # the class(es) it saves
    load: str
    save: str
    shipped_dir: str | None = None  # where its shipped names live
    what: str = "model"  # how "not a shipped ... name" errors call it
    files: bool = False  # `load` also reads a file (a training .ckpt)
    reads: tuple[str, ...] = ()  # other kinds of folder `load` takes a part from

    def imported(self, attribute: str) -> Any:
        module, name = getattr(self, attribute).split(":")
        return getattr(importlib.import_module(module), name)


KINDS: dict[str, Kind] = {}


def register(kind: Kind) -> None:
    """Make a component kind loadable and savable by name (a later entry replaces one)."""
    KINDS[kind.name] = kind


register(
    Kind(
        "keyframe",
        cls=("keyframe.pipeline:KeyframePipeline", "keyframe.module:KeyframeModule"),
        load="keyframe.pretrained:load_keyframe",
        save="keyframe.pretrained:save_keyframe",
        shipped_dir="keyframe.pretrained:SHIPPED_DIR",
        files=True,
    )
)
register(
    Kind(
        "autoencoder",
        cls=("keyframe.autoencoder:FrameAutoencoder", "keyframe.autoencoder:IdentityAutoencoder"),
        load="keyframe.autoencoder_files:load_autoencoder_path",
        save="keyframe.autoencoder_files:save_autoencoder",
        shipped_dir="keyframe.pretrained:SHIPPED_DIR",  # a shipped model's own autoencoder
        what="autoencoder",
        files=True,
        reads=("keyframe", "interpolate"),
    )
)


def infer_kind(config: Mapping[str, Any], where: Path) -> str:
    """The component a config holds: its "kind", or for folders written before "kind" named
    the component, what its other fields say."""
    kind = config.get("kind")
    if kind in KIND_NAMES:
        return kind
    if kind == "general-interpolator":  # the shipped general interpolator's config
        return "general"
    if config.get("model") in _LEGACY_MODELS:
        return _LEGACY_MODELS[config["model"]]
    if config.get("format") == "animatic-motion-prior":
        return "motion"
    if kind in ("kl", "identity") and where.name == _LEGACY_CONFIG:
        return "autoencoder"
    raise UserError(f"{where}: unknown kind {kind!r} (expected one of {', '.join(KIND_NAMES)})")


def read_config(folder: Path) -> tuple[dict[str, Any], str]:
    """A model folder's config and the kind it holds."""
    path = folder / CONFIG_NAME
    if not path.is_file() and (folder / _LEGACY_CONFIG).is_file():
        path = folder / _LEGACY_CONFIG
    if not path.is_file():
        raise UserError(
            f"{path}: not found (a model folder holds {CONFIG_NAME} and {WEIGHTS_NAME})"
        )
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as err:
        raise UserError(f"{path}: unreadable model config ({err})") from None
    if not isinstance(config, dict):
        raise UserError(f"{path}: unreadable model config (expected a JSON object)")
    return config, infer_kind(config, path)


def write_config(folder: Path, kind: str, config: Mapping[str, Any]) -> None:
    """Write `folder/config.json` atomically, "kind" first."""
    from keyframe.files import atomic_write

    text = json.dumps({"kind": kind, **config}, indent=2) + "\n"
    atomic_write(folder / CONFIG_NAME, lambda tmp: Path(tmp).write_text(text, encoding="utf-8"))


def shipped_models(shipped_dir: Path) -> list[str]:
    """Names of the models shipped in `shipped_dir`: its folders with a config.json."""
    if not shipped_dir.is_dir():
        return []
    return sorted(p.name for p in shipped_dir.iterdir() if (p / CONFIG_NAME).is_file())


def _kinds(kind: str | Sequence[str] | None) -> tuple[str, ...]:
    kinds = tuple(KINDS) if kind is None else (kind,) if isinstance(kind, str) else tuple(kind)
    for name in kinds:
        if name not in KINDS:
            hint = " (import interpolate to register it)" if name in KIND_NAMES else ""
            raise UserError(f"kind {name!r}: not a registered model kind{hint}")
    return kinds


def resolve(name_or_path: str | os.PathLike, kind: str | Sequence[str] | None = None) -> Path:
    """The folder or file a model name or path refers to; a path wins over a name. Names are
    looked up in the shipped folders of `kind` (one kind or several; None: every kind)."""
    kinds = _kinds(kind)
    path = Path(name_or_path).expanduser()
    if path.exists():
        return path
    dirs = list(
        dict.fromkeys(KINDS[k].imported("shipped_dir") for k in kinds if KINDS[k].shipped_dir)
    )
    name = str(name_or_path)
    found = [d / name for d in dirs if name in shipped_models(d)]
    if len(found) > 1:
        raise UserError(
            f"model {name!r}: names {len(found)} shipped models ({', '.join(map(str, found))}); "
            "pass kind= to pick one"
        )
    if found:
        return found[0]
    available = sorted({n for d in dirs for n in shipped_models(d)})
    listed = ", ".join(available) if available else "none are shipped yet"
    raise UserError(
        f"model {name!r}: no such file or folder, and not a shipped {KINDS[kinds[0]].what} name "
        f"(available: {listed}); give a folder written by save_pretrained or a training .ckpt"
    )


def from_pretrained(
    name_or_path: str | os.PathLike,
    kind: str | Sequence[str] | None = None,
    device: Any = "cpu",
) -> Any:
    """The component saved in a folder (or a training .ckpt, for the kinds that read one), or
    the shipped model of that name, ready to use on `device`. `kind` (one or several) is what the
    caller expects: a folder holding another kind is refused, and a kind that `reads` it takes
    its part (an autoencoder from a keyframe or interpolation folder: how models share one)."""
    kinds = _kinds(kind)
    path = resolve(name_or_path, kinds)
    if path.is_file():
        readers = [k for k in kinds if KINDS[k].files]
        if len(readers) != 1:
            listed = f"pass kind= ({', '.join(readers)})" if readers else "expected a model folder"
            raise UserError(f"{path}: a file, not a model folder ({CONFIG_NAME}); {listed}")
        return KINDS[readers[0]].imported("load")(path, device)
    found = read_config(path)[1]
    if kind is None:  # the folder's own kind, registered or not
        return KINDS[_kinds(found)[0]].imported("load")(path, device)
    loader = next((k for k in kinds if k == found), None)
    loader = loader or next((k for k in kinds if found in KINDS[k].reads), None)
    if loader is None:
        expected = " or ".join(map(repr, kinds))
        raise UserError(f"{path / CONFIG_NAME}: its kind is {found!r}, expected {expected}")
    return KINDS[loader].imported("load")(path, device)


def kind_of(obj: Any) -> str:
    """The registered kind whose class `obj` is an instance of."""
    names = {f"{c.__module__}:{c.__qualname__}" for c in type(obj).__mro__}
    for kind in KINDS.values():
        if names.intersection((kind.cls,) if isinstance(kind.cls, str) else kind.cls):
            return kind.name
    raise UserError(f"{type(obj).__name__}: not a model component save_pretrained knows")


def save_pretrained(obj: Any, folder: str | os.PathLike, **options: Any) -> Path:
    """Write `obj` as a model folder (config.json with its "kind", model.safetensors), each file
    atomically; `options` are its kind's (fp16, overwrite; keyframe and interpolate also take
    shared_autoencoder and int8). Refuses to replace files unless overwrite. Returns the folder."""
    return KINDS[kind_of(obj)].imported("save")(obj, Path(folder), **options)


def prepare_folder(folder: Path, overwrite: bool) -> Path:
    """Create `folder` for a save; refuses a file there, or (unless `overwrite`) an existing
    weights or config file."""
    if folder.exists() and not folder.is_dir():
        raise UserError(f"{folder}: is a file; expected a folder for the model")
    for name in (WEIGHTS_NAME, CONFIG_NAME):
        if (folder / name).exists() and not overwrite:
            raise UserError(f"{folder / name}: already exists (pass overwrite=True to replace it)")
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def write_weights(folder: Path, state: Mapping[str, Any]) -> None:
    """Write `folder/model.safetensors` atomically."""
    from safetensors.torch import save_file

    from keyframe.files import atomic_write

    atomic_write(
        folder / WEIGHTS_NAME,
        lambda tmp: save_file(dict(state), str(tmp), metadata={"format": "pt"}),
    )


def read_weights(folder: Path, convert: Callable[[dict], dict] | None = None) -> dict:
    """`folder/model.safetensors` as a dict of tensors (through `convert` if given)."""
    from safetensors.torch import load_file

    path = folder / WEIGHTS_NAME
    if not path.is_file():
        raise UserError(
            f"{path}: not found (a model folder holds {CONFIG_NAME} and {WEIGHTS_NAME})"
        )
    try:
        weights = load_file(str(path))
        return convert(weights) if convert is not None else weights
    except Exception as err:
        raise UserError(f"{path}: unreadable weights ({err})") from None
