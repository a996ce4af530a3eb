"""`GeneralInterpolator`: keys at frame numbers in, every frame out, at the keys' own resolution.

    pipe = GeneralInterpolator.from_pretrained("general")
    for frame in pipe(keys, positions=[0, 12, 30], num_frames=31): ...

Each gap between neighbouring keys is made in numbered steps:
  1. the keys at the working resolution (longer side `working_size`, sizes a multiple of 8);
  2. the flow init: DIS flows between the two keys, both ways, carried to each in-between's time;
  3. the motion: the network's residual to the init, sampled with DPM-Solver++(2M) from
     `sigma_start` in `steps` steps, `window` in-betweens per run (their temporal layers agree);
     a model saved without a network (``"network": false``, as the shipped `general` is until
     trained weights beat it) or run with steps=0 keeps the flow init;
  4. the frames: each in-between is the keys' own pixels moved by that motion (resized to the
     keys' size) and blended (interpolate.general.warp).
Keys come back exactly; identical neighbouring keys (a hold) give copies without sampling.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import cv2
import numpy as np
import torch

from interpolate.general.model import MotionConfig, build_denoiser
from interpolate.general.motion import condition, init_flows, init_motion, key_flows
from interpolate.general.warp import keys_agree, make_frame
from keyframe import hub
from keyframe.errors import UserError
from keyframe.sampling import sample
from keyframe.sampling_options import with_defaults


def working_shape(height: int, width: int, config: MotionConfig) -> tuple[int, int]:
    """(h, w) motion is made at: the keys' shape with its longer side at most working_size,
    rounded to the network's size multiple."""
    scale = min(1.0, config.working_size / max(height, width))
    m = config.multiple
    return (max(m, round(height * scale / m) * m), max(m, round(width * scale / m) * m))


def _rgb8(key: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """A key's colour as uint8 RGB at `shape` (premultiplied alpha is dropped)."""
    rgb = np.clip(key[..., :3] * 255 + 0.5, 0, 255).astype(np.uint8)
    if rgb.shape[:2] == tuple(shape):
        return rgb
    return cv2.resize(rgb, (shape[1], shape[0]), interpolation=cv2.INTER_AREA)


class GeneralInterpolator:
    """The denoiser, its config and the sampling steps; see the module docstring."""

    def __init__(self, denoiser: torch.nn.Module | None, config: MotionConfig, device: str = "cpu"):
        self.denoiser = None if denoiser is None else denoiser.to(device).eval()
        self.config = config
        self.device = device

    @property
    def trained(self) -> bool:
        """Whether a motion network refines the flow init (False: the init alone)."""
        return self.denoiser is not None

    def sampling_defaults(self) -> dict:
        """The model's own sampling settings, from its config: the one default of `steps` (its
        sampler is always dpmpp_2m, and it takes no guidance)."""
        return {"steps": self.config.steps, "sampler": "dpmpp_2m"}

    # ---- saving and loading (keyframe.hub: the `general` kind) --------------------------------

    @classmethod
    def from_pretrained(cls, name_or_path: str | os.PathLike, device: str = "cpu"):
        """`hub.from_pretrained(name_or_path, kind="general", device=device)`."""
        return hub.from_pretrained(name_or_path, "general", device)

    def save_pretrained(self, folder: str | os.PathLike, **options) -> Path:
        """`hub.save_pretrained(self, folder, **options)`; options: see `save_general`."""
        return save_general(self, folder, **options)

    # ---- sampling -----------------------------------------------------------------------------

    @torch.no_grad()
    def motion(self, k0: np.ndarray, k1: np.ndarray, times: Sequence[float], seed: int,
               steps: int | None = None) -> np.ndarray:  # fmt: skip
        """Steps 2-3 for uint8 working-resolution keys: motion (f, 5, h, w) at `times`."""
        f01, f10 = (torch.from_numpy(f).permute(2, 0, 1)[None] for f in key_flows(k0, k1))
        t = torch.tensor([list(times)], dtype=torch.float32)
        init = init_flows(f01, f10, t)
        steps = with_defaults(self.sampling_defaults(), steps=steps)["steps"]
        if steps == 0 or self.denoiser is None:  # the flow init alone (what the network refines)
            return init_motion(init)[0].permute(1, 0, 2, 3).numpy()
        keys = [torch.from_numpy(k).permute(2, 0, 1)[None].float() / 127.5 - 1 for k in (k0, k1)]
        cond = condition(keys[0], keys[1], init, t).to(self.device)
        generator = torch.Generator().manual_seed(seed)

        def denoise(x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
            return self.denoiser(x, sigma, cond=cond)

        shape = (1, 5, len(times), *k0.shape[:2])
        residual = sample(denoise, shape, steps, "dpmpp_2m", sigma_max=self.config.sigma_start,
                          generator=generator, device=self.device)  # fmt: skip
        return (init_motion(init) + residual.cpu())[0].permute(1, 0, 2, 3).numpy()

    def __call__(
        self,
        keys: Sequence[np.ndarray],
        positions: Sequence[int],
        num_frames: int,
        seed: int = 0,
        steps: int | None = None,
        callback: Callable[[int, int], None] | None = None,
        guides: Sequence[np.ndarray] | None = None,
    ) -> Iterator[np.ndarray]:
        """Every frame (h, w, c) float32 in order; keys (h, w, c) float32 (colour in [0, 1],
        premultiplied when c = 4), all the same shape, at strictly increasing `positions`.
        Frames before the first key or after the last repeat it. `callback(done, total)`
        after each in-between. `guides`: 8-bit RGB stand-ins of the keys to find motion on
        (default: their colour, clipped to [0, 1])."""
        shape = working_shape(*keys[0].shape[:2], self.config)
        guides = guides if guides is not None else [_rgb8(k, keys[0].shape[:2]) for k in keys]
        total = sum(b - a - 1 for a, b in zip(positions, positions[1:], strict=False))
        done = 0
        for _f in range(positions[0]):
            yield keys[0]
        for i, (a, b) in enumerate(zip(positions, positions[1:], strict=False)):
            yield keys[i]
            pair = (keys[i], keys[i + 1], guides[i], guides[i + 1])
            for frame in self._gap(pair, b - a, shape, seed + i, steps):
                done += 1
                if callback is not None:
                    callback(done, total)
                yield frame
        for _f in range(positions[-1], num_frames):
            yield keys[-1]

    def _gap(self, pair, gap: int, shape, seed: int, steps) -> Iterator[np.ndarray]:
        """The gap - 1 in-betweens between two keys (with their guides), window by window."""
        k0, k1, g0, g1 = pair
        if gap < 2:
            return
        if np.array_equal(k0, k1):
            yield from (k0.copy() for _ in range(gap - 1))
            return
        small = tuple(cv2.resize(g, (shape[1], shape[0]), interpolation=cv2.INTER_AREA)
                      for g in (g0, g1))  # fmt: skip
        agree = keys_agree(k0, k1)
        frames = list(range(1, gap))
        runs = math.ceil(len(frames) / self.config.window)
        for r in range(runs):
            part = frames[r * len(frames) // runs : (r + 1) * len(frames) // runs]
            motion = self.motion(*small, [f / gap for f in part], seed * 1000 + r, steps)
            for f, field in zip(part, motion, strict=True):
                yield make_frame(k0, k1, field, f / gap, agree)


def save_general(
    pipe: GeneralInterpolator, folder: str | os.PathLike, fp16: bool = True, overwrite: bool = False
) -> Path:
    """The `general` kind's saver: `config.json` (``"network": false`` without a denoiser) and
    `model.safetensors` (fp16 if asked), atomically."""
    folder = hub.prepare_folder(Path(folder), overwrite)
    if pipe.denoiser is None:
        hub.write_config(folder, "general", {"network": False, "config": pipe.config.to_dict()})
        return folder
    dtype = torch.float16 if fp16 else torch.float32
    state = {k: v.detach().to("cpu", dtype).contiguous()
             for k, v in pipe.denoiser.state_dict().items()}  # fmt: skip
    hub.write_weights(folder, state)
    hub.write_config(folder, "general", {"config": pipe.config.to_dict()})
    return folder


def load_general(folder: Path, device: str = "cpu") -> GeneralInterpolator:
    """The `general` kind's loader: a general interpolator from its folder."""
    record = hub.read_config(folder)[0]
    try:
        config = MotionConfig.from_dict(record["config"])
    except (KeyError, TypeError, ValueError) as err:
        where = folder / hub.CONFIG_NAME
        raise UserError(f"{where}: bad general interpolator config ({err})") from None
    if record.get("network", True) is False:
        return GeneralInterpolator(None, config, device)
    if not (folder / hub.WEIGHTS_NAME).is_file():
        raise UserError(f"{folder}: no {hub.WEIGHTS_NAME} (its config names a network)")
    denoiser = build_denoiser(config)
    state = {k: v.float() for k, v in hub.read_weights(folder).items()}
    missing, unexpected = denoiser.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise UserError(f"{folder}: weights do not fit the config ({len(missing)} missing)")
    return GeneralInterpolator(denoiser, config, device)
