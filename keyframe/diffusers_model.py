"""A local diffusers text-to-image folder (Stable Diffusion 1.5, SDXL, ...) as a stage-1 model.

`diffusers:PATH` names one: a folder written by a diffusers pipeline's `save_pretrained` (with
its model_index.json). It is read from disk only (`local_files_only`, HF_HUB_OFFLINE), never
downloaded, and needs the optional extra `pip install 'animatic[diffusers]'`.

What maps onto it: prompt, negative prompt, steps, guidance (classifier-free, the same
uncond + scale * (cond - uncond); at or below 1 diffusers draws the conditional model alone),
per-image seeds (each image's starting noise comes from its own CPU generator, so a panel
redraws alike anywhere), size (multiples of the model's latent grid), the sampler (euler,
euler_ancestral, heun, dpmpp_2m as diffusers schedulers with Karras sigmas where they take
them; by default the folder's own scheduler), and panel consistency (every self-attention also
attends to the anchor panel's keys and values, and the starting noise may share the anchor's:
keyframe.consistency's two mechanisms) for U-Net pipelines. What does not: `place` (the shapes
models' layout plug-in) and the shapes vocabulary check (the folder records no words).
"""

from __future__ import annotations

import hashlib
import importlib.util
import inspect
import json
import math
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from keyframe.errors import UserError

PREFIX = "diffusers:"
SCHEDULERS = {
    "euler": "EulerDiscreteScheduler",
    "euler_ancestral": "EulerAncestralDiscreteScheduler",
    "heun": "HeunDiscreteScheduler",
    "dpmpp_2m": "DPMSolverMultistepScheduler",
}
INSTALL = "pip install 'animatic[diffusers]'"


def is_diffusers(name: object) -> bool:
    return isinstance(name, str) and name.startswith(PREFIX)


def diffusers_folder(name: str) -> Path:
    """The folder of a `diffusers:PATH` name; a UserError unless it holds a diffusers pipeline."""
    path = Path(name[len(PREFIX) :]).expanduser()
    if not str(path) or not path.is_dir():
        raise UserError(f"model {name!r}: no such folder (expected diffusers:PATH to a folder)")
    if not (path / "model_index.json").is_file():
        raise UserError(
            f"model {name!r}: {path} has no model_index.json; expected a diffusers "
            "text-to-image folder (written by a pipeline's save_pretrained)"
        )
    return path.resolve()


def fingerprint(folder: Path) -> str:
    """SHA-256 of the folder's JSON configs and its weight files' names and sizes (not their
    bytes: hashing gigabytes for every image costs too much)."""
    digest = hashlib.sha256()
    for path in sorted(p for p in folder.rglob("*") if p.is_file() and not p.name.startswith(".")):
        rel = path.relative_to(folder).as_posix()
        digest.update(rel.encode() + b"\0")
        if path.suffix == ".json" or path.suffix == ".txt":
            digest.update(path.read_bytes())
        else:
            digest.update(str(path.stat().st_size).encode())
    return digest.hexdigest()


@dataclass
class DiffusersModel:
    """A loaded pipeline with what sampling needs to know about it."""

    pipe: object
    name: str
    folder: Path
    device: torch.device

    @property
    def unet(self):
        return getattr(self.pipe, "unet", None)

    @property
    def scale(self) -> int:
        """Image pixels per latent pixel."""
        return int(getattr(self.pipe, "vae_scale_factor", 8))

    @property
    def multiple(self) -> int:
        """Image sides must be multiples of this: the latent grid times the U-Net's halvings."""
        unet = self.unet
        levels = len(unet.config.block_out_channels) - 1 if unet is not None else 0
        return self.scale * 2**levels

    @property
    def native_size(self) -> int:
        """The side the model was trained at (its U-Net's sample size in pixels)."""
        unet = self.unet
        sample = getattr(unet.config, "sample_size", None) if unet is not None else None
        side = sample if isinstance(sample, int) else 64
        return side * self.scale

    def sampling_defaults(self) -> dict:
        """The pipeline's own default steps and guidance (its __call__'s defaults), and sampler
        None: the folder's own scheduler. The one default of each for a diffusers model."""
        params = inspect.signature(self.pipe.__call__).parameters
        steps = getattr(params.get("num_inference_steps"), "default", None)
        guidance = getattr(params.get("guidance_scale"), "default", None)
        return {
            "steps": int(steps) if isinstance(steps, (int, float)) and steps else 30,
            "guidance": float(guidance) if isinstance(guidance, (int, float)) and guidance else 7.5,
            "sampler": None,
        }


def load_diffusers(name: str, device: str | torch.device = "cpu") -> DiffusersModel:
    """Load a `diffusers:PATH` text-to-image pipeline from disk onto `device` (fp16 on CUDA)."""
    folder = diffusers_folder(name)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # belt and braces: local_files_only below
    try:
        from diffusers import AutoPipelineForText2Image
    except ImportError:
        raise UserError(f"model {name!r}: needs the diffusers extra ({INSTALL})") from None
    from diffusers.utils import logging as diffusers_logging

    diffusers_logging.disable_progress_bar()  # the command shows its own progress
    device = torch.device(device)
    options = {"local_files_only": True}
    options["low_cpu_mem_usage"] = importlib.util.find_spec("accelerate") is not None
    if device.type == "cuda":
        options["torch_dtype"] = torch.float16
    try:
        pipe = AutoPipelineForText2Image.from_pretrained(str(folder), **options)
    except Exception as err:
        detail = " ".join(str(err).split())[:300]
        raise UserError(f"model {name!r}: cannot load the diffusers pipeline ({detail})") from None
    pipe = pipe.to(device)
    pipe.set_progress_bar_config(disable=True)
    return DiffusersModel(pipe, name, folder, device)


def draw_size(model: DiffusersModel, width: int, height: int) -> tuple[int, int]:
    """Where a film is smaller than the model's native size, the size to draw at instead: the
    film's aspect with its short side at the native size, in multiples of the model's grid."""
    m, native = model.multiple, model.native_size
    scale = max(1.0, native / min(width, height))
    return tuple(max(m, math.ceil(side * scale / m) * m) for side in (width, height))


def check_size(model: DiffusersModel, width: int, height: int) -> None:
    m = model.multiple
    if min(width, height) < m or width % m or height % m:
        raise UserError(f"size: {width}x{height} must be multiples of {m} for {model.name}")


def _set_scheduler(model: DiffusersModel, sampler: str | None) -> None:
    """The scheduler of a sampler name (checked by check_sampling_options: the same names)."""
    if sampler is None:
        return
    import diffusers

    cls = getattr(diffusers, SCHEDULERS[sampler])
    extra = {"use_karras_sigmas": True}
    extra = {k: v for k, v in extra.items() if k in inspect.signature(cls.__init__).parameters}
    model.pipe.scheduler = cls.from_config(model.pipe.scheduler.config, **extra)


def _noise(model: DiffusersModel, seeds: Sequence[int], width: int, height: int) -> torch.Tensor:
    """Each image's starting latents from a CPU generator seeded by its own seed."""
    channels = model.unet.config.in_channels
    shape = (channels, height // model.scale, width // model.scale)
    noise = [torch.randn(shape, generator=torch.Generator().manual_seed(s)) for s in seeds]
    return torch.stack(noise)


class _AnchoredSelfAttention:
    """An attention processor wrapper: self-attention (no encoder states) also attends to the
    anchor's hidden states, i.e. keys and values from [own; anchor's] (Text2Video-Zero's
    cross-frame attention); an anchor attends to itself twice, which is the same as once."""

    def __init__(self, inner, anchors: Sequence[int]):
        self.inner, self.anchors = inner, tuple(anchors)

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, *args, **kwargs):
        if encoder_hidden_states is None and hidden_states.ndim == 3:
            n = len(self.anchors)
            index = [j - j % n + self.anchors[j % n] for j in range(len(hidden_states))]
            encoder_hidden_states = torch.cat([hidden_states, hidden_states[index]], dim=1)
        return self.inner(attn, hidden_states, encoder_hidden_states, *args, **kwargs)


def _anchored(model: DiffusersModel, anchors: Sequence[int] | None):
    """Install anchored self-attention on every attn1 of the U-Net; returns the old processors."""
    if anchors is None:
        return None
    old = dict(model.unet.attn_processors)
    new = {
        name: _AnchoredSelfAttention(proc, anchors) if name.endswith("attn1.processor") else proc
        for name, proc in old.items()
    }
    model.unet.set_attn_processor(new)
    return old


def sample_diffusers(
    model: DiffusersModel,
    prompts: Sequence[str],
    negatives: Sequence[str],
    seeds: Sequence[int],
    steps: int | None,
    guidance: float | None,
    size: tuple[int, int],
    sampler: str | None = None,
    anchors: Sequence[int] | None = None,
    noise_share: float = 0.0,
    callback: Callable[[], None] | None = None,
) -> np.ndarray:
    """Images for prompts as uint8 (n, h, w, 3), size = (width, height). `anchors`/`noise_share`:
    panel consistency (see the module docstring); `callback()` after every step. Steps,
    guidance or sampler None: the model's `sampling_defaults`."""
    from keyframe.consistency import anchor_list, share_noise
    from keyframe.sampling_options import check_sampling_options, with_defaults

    check_sampling_options(steps, guidance, sampler)
    chosen = with_defaults(model.sampling_defaults(), steps=steps, guidance=guidance)
    steps, guidance = chosen["steps"], chosen["guidance"]
    width, height = size
    check_size(model, width, height)
    _set_scheduler(model, sampler)
    kwargs = {}
    if model.unet is not None:
        noise = _noise(model, seeds, width, height)
        if anchors is not None:
            noise = share_noise(noise, anchor_list(list(anchors), len(prompts)), noise_share)
        kwargs["latents"] = noise.to(model.device, model.unet.dtype)
    elif anchors is not None:
        raise UserError(f"{model.name}: panel consistency needs a U-Net pipeline")
    else:
        kwargs["generator"] = [torch.Generator().manual_seed(s) for s in seeds]
    if callback is not None:

        def on_step(pipe, step, timestep, tensors: dict) -> dict:
            callback()
            return tensors

        kwargs["callback_on_step_end"] = on_step
    old = _anchored(model, anchors)
    try:
        with torch.no_grad():
            out = model.pipe(
                prompt=list(prompts), negative_prompt=list(negatives), num_inference_steps=steps,
                guidance_scale=guidance, height=height, width=width, output_type="np", **kwargs,
            )  # fmt: skip
    finally:
        if old is not None:
            model.unet.set_attn_processor(old)
    images = np.asarray(out.images, dtype=np.float32)
    return (np.clip(images, 0, 1) * 255).round().astype(np.uint8)


def describe(model: DiffusersModel) -> dict:
    """The model's record for sidecars: name, folder, pipeline class, config fingerprint."""
    try:
        index = json.loads((model.folder / "model_index.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        index = {}
    return {
        "name": model.name,
        "kind": "diffusers",
        "path": str(model.folder),
        "pipeline": type(model.pipe).__name__,
        "diffusers_class": index.get("_class_name"),
        "fingerprint": fingerprint(model.folder),
    }
