"""The models `animatic bench` measures and their inputs: each config's `model:` section of
configs/{keyframe,interpolate}/NAME.yaml built with random weights (speed does not depend on
the weights), and random network inputs, keys and training batches for them.
"""

from __future__ import annotations

import inspect
from pathlib import Path
from typing import Any

import torch

from keyframe.errors import UserError

CONFIG_DIR = Path(__file__).resolve().parents[1] / "configs"
PROMPT = "a large red circle at the top left on a navy background"
CLIP_PROMPT = "a large red circle bounces to the left on a navy background"


# ---- building models from configs -------------------------------------------------------------


def config_path(stage: str, name: str) -> Path:
    """configs/STAGE/NAME.yaml, or a user error naming the configs there are."""
    path = CONFIG_DIR / stage / f"{name}.yaml"
    if not path.is_file():
        known = sorted(p.stem for p in (CONFIG_DIR / stage).glob("*.yaml"))
        raise UserError(
            f"--configs: no {stage} config {name!r} ({path}); known: {', '.join(known) or 'none'}"
        )
    return path


def read_config(stage: str, name: str) -> dict[str, Any]:
    """The resolved YAML of configs/STAGE/NAME.yaml as plain dicts."""
    from omegaconf import OmegaConf

    from pipeline.train import config_base

    path = config_path(stage, name)
    base = config_base(path)  # an override is read on top of its base, as training reads it
    try:
        layers = [OmegaConf.load(p) for p in ([base] if base else []) + [path]]
        config = OmegaConf.to_container(OmegaConf.merge(*layers), resolve=True)
    except Exception as err:
        raise UserError(f"{path}: unreadable config ({err})") from None
    if not isinstance(config, dict) or not isinstance(config.get("model"), dict):
        raise UserError(f"{path}: expected a `model:` section")
    return config


def _model_arguments(config: dict[str, Any], cls: type) -> dict[str, Any]:
    """The config's model section plus the values LightningCLI links from `data:`."""
    model = dict(config["model"])
    data = config.get("data") or {}
    names = cls.option_names()
    if "image_size" in names and "size" in data:
        model.setdefault("image_size", data["size"])
    if "num_frames" in names and "num_frames" in data:
        model.setdefault("num_frames", data["num_frames"])
    return model


def _autoencoder(name: str, reference: str):
    """Pixel space for 'identity'; otherwise configs/autoencoder/NAME.yaml with random weights."""
    from keyframe.autoencoder import FrameAutoencoder, IdentityAutoencoder

    if reference == "identity":
        return IdentityAutoencoder()
    model = read_config("autoencoder", name)["model"]
    names = inspect.signature(FrameAutoencoder).parameters
    return FrameAutoencoder(**{k: v for k, v in model.items() if k in names}).eval()


def _build_trainer(cls: type, name: str, arguments: dict[str, Any]):
    """`cls(**arguments)` in eval mode, its autoencoder a random-weight one of the config's
    architecture (the file the config names need not exist), read from a temporary folder."""
    import tempfile

    from keyframe import hub

    ae = _autoencoder(name, arguments.get("autoencoder", "identity"))
    with tempfile.TemporaryDirectory(prefix="animatic-bench-") as folder:
        arguments["autoencoder"] = str(hub.save_pretrained(ae, Path(folder) / "ae", fp16=False))
        return cls(**arguments).eval()


def build_keyframe(name: str):
    """KeyframeModule of configs/keyframe/NAME.yaml, random weights, eval mode."""
    from keyframe.module import KeyframeModule

    config = read_config("keyframe", name)
    arguments = _model_arguments(config, KeyframeModule)
    return _build_trainer(KeyframeModule, name, arguments), config


def build_interpolate(name: str):
    """InterpolateModule of configs/interpolate/NAME.yaml, random weights, eval mode."""
    from interpolate.module import InterpolateModule

    config = read_config("interpolate", name)
    arguments = {**_model_arguments(config, InterpolateModule), "init_from": None}
    return _build_trainer(InterpolateModule, name, arguments), config


# ---- inputs -----------------------------------------------------------------------------------


def keyframe_inputs(module, images: int) -> tuple[torch.Tensor, torch.Tensor, dict]:
    """One guided sampling step's network input: [uncond; cond] latents, sigmas, text."""
    h, w = module.latent_size()
    x = torch.randn(2 * images, module.latent_channels, h, w)
    sigma = torch.full((2 * images,), 1.0)
    with torch.no_grad():
        cond = module.sampling_model().encode_text([""] * images + [PROMPT] * images)
    return x, sigma, cond


def tween_inputs(module, frames: int) -> tuple[torch.Tensor, torch.Tensor, dict]:
    """One sampling step of a window with keys at both ends: the video network's input."""
    size = module.hparams.image_size // module.autoencoder.factor
    x = torch.randn(1, module.latent_channels, frames, size, size)
    mask = torch.zeros(1, 1, frames, 1, 1)
    mask[:, :, [0, -1]] = 1
    cond: dict[str, Any] = {"known": x * mask, "mask": mask}
    if module.hparams.fps_conditioning:
        cond["fps"] = torch.tensor([24.0])
    if module.text is not None:
        with torch.no_grad():
            cond.update(module.sampling_model().encode_text([CLIP_PROMPT]))
    return x, torch.tensor([1.0]), cond


def random_keys(module) -> torch.Tensor:
    """Two seeded random keys (2, 3, size, size) in [-1, 1] at the model's image size."""
    size = module.hparams.image_size
    return torch.rand(2, 3, size, size, generator=torch.Generator().manual_seed(0)) * 2 - 1


def train_batch(
    module, config: dict[str, Any], max_frames: int | None, video: bool
) -> dict[str, Any]:
    """Random pixels at the config's data.batch_size (cut to `max_frames` frames if given)."""
    batch = int((config.get("data") or {}).get("batch_size", 4))
    frames = module.hparams.num_frames if video else 1
    if max_frames is not None:
        batch = max(1, min(batch, max_frames // frames))
    size = module.hparams.image_size
    g = torch.Generator().manual_seed(0)
    if video:
        pixels = torch.rand(batch, 3, frames, size, size, generator=g) * 2 - 1
        return {
            "video": pixels,
            "caption": [CLIP_PROMPT] * batch,
            "fps": torch.full((batch,), 24.0),
        }
    pixels = torch.rand(batch, 3, size, size, generator=g) * 2 - 1
    return {"image": pixels, "caption": [PROMPT] * batch}
