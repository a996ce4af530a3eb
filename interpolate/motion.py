"""A learned motion prior: where a point is between two keys, from where it is at up to four keys.

Flow init (interpolate.paths) moves each key's pixels along a path through the neighbouring keys.
A parabola through three keys fits free flight but not a bounce between keys; this small MLP
learns the paths of a dataset's object tracks instead (positions in canvas units, times in
seconds), so its paths do what the data does: in the shapes world, gravity and bounces off the
floor and walls. A model ships its prior in a `motion/` folder beside its weights; training is
`animatic train motion fit --config configs/motion/shapes.yaml` (interpolate.motion_training).
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
from einops import rearrange
from torch import nn

from keyframe import hub
from keyframe.errors import UserError

FORMAT = "animatic-motion-prior"
VERSION = 2  # version 1 priors had 15 features (no velocities): retrain them
FOLDER = "motion"  # a model's prior, inside its pretrained folder
NUM_FEATURES = 23


def motion_features(
    pos: torch.Tensor, times: torch.Tensor, mask: torch.Tensor, query: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Network input and the straight-line guess it corrects. pos (..., 4, 2): the point at the
    keys before, start, end and after the segment (canvas units); times (..., 4) in seconds;
    mask (..., 4): 1 where that key exists (start and end always do); query (...,): seconds.
    Besides positions and times, the input holds the velocities between neighbouring keys and
    the free-fall sag u (T - u): an MLP divides and multiplies poorly, and paths are made of
    these (version 2; the 15 inputs of version 1 gave 2.1 px where these give 0.5)."""
    start, end = pos[..., 1, :], pos[..., 2, :]
    t0 = times[..., 1]
    span = times[..., 2] - t0
    u = query - t0
    s = u / span
    rel = (pos - start.unsqueeze(-2)) * mask.unsqueeze(-1)
    dt = (times - t0.unsqueeze(-1)) * mask
    before = (t0 - times[..., 0]).masked_fill(mask[..., 0] == 0, 1.0)
    after = (times[..., 3] - times[..., 2]).masked_fill(mask[..., 3] == 0, 1.0)
    velocities = [
        (start - pos[..., 0, :]) / before.unsqueeze(-1) * mask[..., :1],
        (end - start) / span.unsqueeze(-1),
        (pos[..., 3, :] - end) / after.unsqueeze(-1) * mask[..., 3:],
    ]
    features = torch.cat(
        [
            start,
            rearrange(rel[..., [0, 2, 3], :], "... k c -> ... (k c)"),
            dt[..., [0, 2, 3]],
            mask[..., [0, 3]],
            torch.stack([u, s, span, u * (span - u)], -1),
            *velocities,
        ],
        dim=-1,
    )
    return features, start + s.unsqueeze(-1) * (end - start)


class MotionPrior(nn.Module):
    """MLP from a point's positions at the keys around a segment to its position at a time in
    the segment: the straight line between the segment's keys plus a learned correction
    (scaled by `scale`, so the network's outputs are of order one)."""

    def __init__(self, hidden: int = 256, depth: int = 3, scale: float = 20.0):
        super().__init__()
        if hidden < 1 or depth < 1 or scale <= 0:
            raise ValueError("MotionPrior: hidden and depth must be >= 1 and scale > 0")
        self.hidden, self.depth, self.scale = hidden, depth, scale
        layers: list[nn.Module] = [nn.Linear(NUM_FEATURES, hidden), nn.SiLU()]
        for _ in range(depth - 1):
            layers += [nn.Linear(hidden, hidden), nn.SiLU()]
        self.net = nn.Sequential(*layers, nn.Linear(hidden, 2))

    def forward(
        self, pos: torch.Tensor, times: torch.Tensor, mask: torch.Tensor, query: torch.Tensor
    ) -> torch.Tensor:
        """Positions (..., 2) at `query`; arguments as in `motion_features`."""
        features, line = motion_features(pos, times, mask, query)
        return line + self.net(features) / self.scale

    def config(self) -> dict:
        return {"hidden": self.hidden, "depth": self.depth, "scale": self.scale}

    def save_pretrained(self, directory: str | os.PathLike, **options) -> Path:
        """`hub.save_pretrained(self, directory, **options)`; options: see `save_prior`."""
        return save_prior(self, directory, **options)

    @classmethod
    def from_pretrained(cls, directory: str | os.PathLike) -> MotionPrior:
        """`hub.from_pretrained(directory, kind="motion")`: see `load_prior`."""
        return hub.from_pretrained(directory, "motion")


def save_prior(
    prior: MotionPrior, directory: str | os.PathLike, fp16: bool = True, overwrite: bool = False
) -> Path:
    """The `motion` kind's saver: `model.safetensors` and `config.json`, each atomically."""
    directory = hub.prepare_folder(Path(directory), overwrite)
    dtype = torch.float16 if fp16 else torch.float32
    hub.write_weights(
        directory,
        {k: v.detach().to("cpu", dtype).contiguous() for k, v in prior.state_dict().items()},
    )
    hub.write_config(
        directory, "motion", {"format": FORMAT, "version": VERSION, "config": prior.config()}
    )
    return directory


def load_prior(directory: Path, device: str | torch.device = "cpu") -> MotionPrior:
    """The `motion` kind's loader: a prior written by `save_prior`, float32, in eval mode."""
    config_path = directory / hub.CONFIG_NAME
    record = hub.read_config(directory)[0]
    if record.get("format") != FORMAT:
        raise UserError(f"{config_path}: not a motion prior config (format {FORMAT!r})")
    if record.get("version") != VERSION:
        raise UserError(
            f"{config_path}: motion prior version {record.get('version')!r}, this animatic "
            f"reads version {VERSION}; retrain it (animatic train motion fit)"
        )
    try:
        prior = MotionPrior(**record["config"])
        state = hub.read_weights(directory)
        prior.load_state_dict({k: v.float() for k, v in state.items()})
    except (KeyError, TypeError, ValueError, RuntimeError) as err:
        raise UserError(f"{directory}: cannot load the motion prior ({err})") from None
    return prior.to(device).eval()


def model_prior(model_dir: str | os.PathLike) -> MotionPrior | None:
    """The prior shipped with a pretrained model folder (its `motion/` folder), if it has one."""
    folder = Path(model_dir) / FOLDER
    return hub.from_pretrained(folder, "motion") if folder.is_dir() else None
