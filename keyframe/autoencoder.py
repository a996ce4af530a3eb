"""The frame autoencoder: the latent space both diffusion stages work in (as in latent diffusion).

`FrameAutoencoder` is a KL-regularised convolutional autoencoder (Rombach et al. 2022) with a
downsampling factor of 2**(len(channel_mult) - 1); `IdentityAutoencoder` is pixel space behind the
same interface. Both take images `n c h w` or videos `b c f h w` in [-1, 1] and run `chunk` frames
at a time, so long videos never hold all frames' activations; chunks run on the model's device and
results come back on the input's device. Latents are normalised, `(mean - shift) * scale_factor`,
with the scale and shift measured on data (`measure_scale`) and stored with the weights.
"""

from __future__ import annotations

import inspect
import json
import math
import os
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import lightning as L
import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from keyframe.errors import UserError
from keyframe.files import atomic_write, load_checkpoint
from keyframe.layers import Downsample, ResBlock, SelfAttention2d, Upsample, group_norm

WEIGHTS_NAME = "autoencoder.safetensors"
CONFIG_NAME = "autoencoder.json"
FORMAT_VERSION = 1


class _LatentSpace(nn.Module):
    """Shared interface: video folding, chunking, latent normalisation. Subclasses implement
    `_encode_frames(x) -> (mean, logvar)` and `_decode_frames(z)` on `n c h w` frames."""

    in_channels: int
    latent_channels: int
    factor: int

    def __init__(self, scale_factor: float, shift: float):
        super().__init__()
        self.register_buffer("latent_scale", torch.tensor(float(scale_factor)))
        self.register_buffer("latent_shift", torch.tensor(float(shift)))

    @property
    def scale_factor(self) -> float:
        return float(self.latent_scale)

    @scale_factor.setter
    def scale_factor(self, value: float) -> None:
        self.latent_scale.fill_(float(value))

    @property
    def shift(self) -> float:
        return float(self.latent_shift)

    @shift.setter
    def shift(self, value: float) -> None:
        self.latent_shift.fill_(float(value))

    def _compute_place(self, x: torch.Tensor) -> tuple[torch.device, torch.dtype]:
        p = next(self.parameters(), None)
        return (x.device, x.dtype) if p is None else (p.device, p.dtype)

    def _map_frames(self, fn, x: torch.Tensor, channels: int, scale: float, chunk: int):
        """Apply `fn` (frames -> frames, size times `scale`) chunk by chunk, to images or videos."""
        video = x.ndim == 5
        if x.ndim not in (4, 5):
            raise ValueError(f"expected n c h w or b c f h w, got shape {tuple(x.shape)}")
        frames = rearrange(x, "b c f h w -> (b f) c h w") if video else x
        n, _, h, w = frames.shape
        out = torch.empty(
            (n, channels, round(h * scale), round(w * scale)), dtype=x.dtype, device=x.device
        )
        device, dtype = self._compute_place(frames)
        for start in range(0, n, max(int(chunk), 1)):
            part = frames[start : start + chunk].to(device=device, dtype=dtype)
            out[start : start + chunk] = fn(part).to(out.dtype)
        return rearrange(out, "(b f) c h w -> b c f h w", b=x.shape[0]) if video else out

    def _check_size(self, x: torch.Tensor) -> None:
        h, w = x.shape[-2:]
        if h % self.factor or w % self.factor:
            raise UserError(
                f"frame size {h}x{w} must be divisible by the autoencoder factor {self.factor}"
            )

    def encode_moments(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Unnormalised posterior mean and log-variance of `n c h w` frames (for training)."""
        self._check_size(x)
        return self._encode_frames(x)

    def encode(
        self,
        x: torch.Tensor,
        sample: bool = False,
        generator: torch.Generator | None = None,
        chunk: int = 32,
    ) -> torch.Tensor:
        """Frames in [-1, 1] -> normalised latents (posterior mean, or a sample if `sample`)."""
        self._check_size(x)

        def enc(frames: torch.Tensor) -> torch.Tensor:
            mean, logvar = self._encode_frames(frames)
            if sample:
                noise = torch.randn(
                    mean.shape, generator=generator, device=mean.device, dtype=mean.dtype
                )
                mean = mean + torch.exp(0.5 * logvar) * noise
            return (mean - self.latent_shift) * self.latent_scale

        return self._map_frames(enc, x, self.latent_channels, 1 / self.factor, chunk)

    def decode(self, z: torch.Tensor, chunk: int = 32) -> torch.Tensor:
        """Normalised latents -> frames (roughly in [-1, 1]; not clamped)."""

        def dec(latents: torch.Tensor) -> torch.Tensor:
            return self._decode_frames(latents / self.latent_scale + self.latent_shift)

        return self._map_frames(dec, z, self.in_channels, self.factor, chunk)


class IdentityAutoencoder(_LatentSpace):
    """Pixel space: the latent is the frame itself (exact, factor 1)."""

    kind = "identity"

    def __init__(self, in_channels: int = 3):
        super().__init__(1.0, 0.0)
        self.in_channels = self.latent_channels = in_channels
        self.factor = 1

    def config(self) -> dict:
        return {"in_channels": self.in_channels}

    def _encode_frames(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return x, torch.full_like(x, float("-inf"))  # a point mass: sampling stays exact

    def _decode_frames(self, z: torch.Tensor) -> torch.Tensor:
        return z


class Encoder(nn.Module):
    """Conv encoder (LDM layout): ResBlocks per level, strided-conv downsampling, attention in the
    middle; outputs mean and log-variance."""

    def __init__(
        self,
        in_channels: int,
        latent_channels: int,
        base_channels: int,
        channel_mult: Sequence[int],
        num_res_blocks: int,
        mid_attention: bool,
        norm_groups: int = 32,
    ):
        super().__init__()
        self.conv_in = nn.Conv2d(in_channels, base_channels, 3, padding=1)
        layers: list[nn.Module] = []
        ch = base_channels
        for level, mult in enumerate(channel_mult):
            for _ in range(num_res_blocks):
                layers.append(ResBlock(ch, base_channels * mult, norm_groups=norm_groups))
                ch = base_channels * mult
            if level < len(channel_mult) - 1:
                layers.append(Downsample(ch))
        self.down = nn.Sequential(*layers)
        self.mid = nn.Sequential(
            ResBlock(ch, ch, norm_groups=norm_groups),
            SelfAttention2d(ch, norm_groups=norm_groups) if mid_attention else nn.Identity(),
            ResBlock(ch, ch, norm_groups=norm_groups),
        )
        self.norm_out = group_norm(ch, norm_groups)
        self.conv_out = nn.Conv2d(ch, 2 * latent_channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.mid(self.down(self.conv_in(x)))
        mean, logvar = self.conv_out(F.silu(self.norm_out(h))).chunk(2, dim=1)
        return mean, logvar.clamp(-30.0, 20.0)


class Decoder(nn.Module):
    """Mirror of the encoder: middle attention, ResBlocks per level, nearest+conv upsampling."""

    def __init__(
        self,
        out_channels: int,
        latent_channels: int,
        base_channels: int,
        channel_mult: Sequence[int],
        num_res_blocks: int,
        mid_attention: bool,
        norm_groups: int = 32,
    ):
        super().__init__()
        ch = base_channels * channel_mult[-1]
        self.conv_in = nn.Conv2d(latent_channels, ch, 3, padding=1)
        self.mid = nn.Sequential(
            ResBlock(ch, ch, norm_groups=norm_groups),
            SelfAttention2d(ch, norm_groups=norm_groups) if mid_attention else nn.Identity(),
            ResBlock(ch, ch, norm_groups=norm_groups),
        )
        layers: list[nn.Module] = []
        for level, mult in reversed(list(enumerate(channel_mult))):
            for _ in range(num_res_blocks + 1):
                layers.append(ResBlock(ch, base_channels * mult, norm_groups=norm_groups))
                ch = base_channels * mult
            if level > 0:
                layers.append(Upsample(ch))
        self.up = nn.Sequential(*layers)
        self.norm_out = group_norm(ch, norm_groups)
        self.conv_out = nn.Conv2d(ch, out_channels, 3, padding=1)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        h = self.up(self.mid(self.conv_in(z)))
        return self.conv_out(F.silu(self.norm_out(h)))


class FrameAutoencoder(_LatentSpace):
    """KL-regularised conv autoencoder; `factor` = 2**(len(channel_mult) - 1)."""

    kind = "kl"

    def __init__(
        self,
        in_channels: int = 3,
        latent_channels: int = 4,
        base_channels: int = 64,
        channel_mult: Sequence[int] = (1, 2, 4),
        num_res_blocks: int = 1,
        mid_attention: bool = True,
        norm_groups: int = 32,
        scale_factor: float = 1.0,
        shift: float = 0.0,
    ):
        super().__init__(scale_factor, shift)
        self.in_channels = in_channels
        self.latent_channels = latent_channels
        self.factor = 2 ** (len(channel_mult) - 1)
        self._config = {
            "in_channels": in_channels,
            "latent_channels": latent_channels,
            "base_channels": base_channels,
            "channel_mult": list(channel_mult),
            "num_res_blocks": num_res_blocks,
            "mid_attention": mid_attention,
            "norm_groups": norm_groups,
        }
        args = (
            latent_channels, base_channels, channel_mult, num_res_blocks, mid_attention, norm_groups
        )  # fmt: skip
        self.encoder = Encoder(in_channels, *args)
        self.decoder = Decoder(in_channels, *args)

    def config(self) -> dict:
        """Constructor arguments, with the current latent scale and shift."""
        return {**self._config, "scale_factor": self.scale_factor, "shift": self.shift}

    def _encode_frames(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.encoder(x)

    def _decode_frames(self, z: torch.Tensor) -> torch.Tensor:
        return self.decoder(z)


Autoencoder = FrameAutoencoder | IdentityAutoencoder


def _images(batch) -> torch.Tensor:
    return batch["image"] if isinstance(batch, dict) else batch


@torch.no_grad()
def measure_scale(
    autoencoder: Autoencoder, batches: Iterable, max_batches: int | None = None
) -> tuple[float, float]:
    """Set the latent shift to the mean and scale_factor to 1/std of the posterior means over
    `batches` (tensors or {"image": ...} dicts), so normalised latents have zero mean and unit
    variance; one scalar each, as Stable Diffusion (scale) and SD3 (shift) do. Returns both."""
    if isinstance(autoencoder, IdentityAutoencoder):
        return 1.0, 0.0
    total = total_sq = count = 0.0
    device, dtype = autoencoder._compute_place(torch.empty(0))
    for i, batch in enumerate(batches):
        if max_batches is not None and i >= max_batches:
            break
        x = _images(batch)
        if x.ndim == 5:
            x = rearrange(x, "b c f h w -> (b f) c h w")
        mean, _ = autoencoder.encode_moments(x.to(device=device, dtype=dtype))
        mean = mean.double()
        total += float(mean.sum())
        total_sq += float((mean**2).sum())
        count += mean.numel()
    if count == 0:
        raise ValueError("measure_scale needs at least one batch")
    mu = total / count
    std = math.sqrt(max(total_sq / count - mu**2, 1e-12))
    autoencoder.shift, autoencoder.scale_factor = mu, 1.0 / std
    return autoencoder.scale_factor, autoencoder.shift


# ---- losses and metrics ----------------------------------------------------------------------


def kl_divergence(mean: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """KL(N(mean, exp(logvar)) || N(0, 1)), averaged over latent elements."""
    return 0.5 * (mean**2 + logvar.exp() - 1.0 - logvar).mean()


def sobel(x: torch.Tensor) -> torch.Tensor:
    """Sobel x and y gradients of each channel: (b, 2c, h, w)."""
    kx = torch.tensor([[-1.0, 0.0, 1.0], [-2.0, 0.0, 2.0], [-1.0, 0.0, 1.0]]) / 8
    c = x.shape[1]
    kernel = torch.stack([kx, kx.t()])[:, None].to(x).repeat(c, 1, 1, 1)
    return F.conv2d(F.pad(x, (1, 1, 1, 1), mode="replicate"), kernel, groups=c)


def sobel_l1(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """L1 between Sobel image gradients: keeps flat-colour edges sharp with no pretrained net."""
    return (sobel(pred) - sobel(target)).abs().mean()


def edge_weighted_l1(pred: torch.Tensor, target: torch.Tensor, strength: float) -> torch.Tensor:
    """L1 with pixels near the target's edges weighted up to 1 + strength (normalised per image,
    mean weight 1): outlines of small objects, which decide their shape, count as much as the
    large flat areas around them."""
    if strength <= 0:
        return (pred - target).abs().mean()
    with torch.no_grad():
        edges = sobel(target).abs().sum(1, keepdim=True)
        edges = F.max_pool2d(edges, 3, stride=1, padding=1)
        edges = edges / edges.amax(dim=(2, 3), keepdim=True).clamp_min(1e-6)
        weight = 1 + strength * edges
        weight = weight / weight.mean(dim=(2, 3), keepdim=True)
    return (weight * (pred - target).abs()).mean()


def psnr(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean per-frame PSNR (dB) of frames in [-1, 1], measured after mapping them to [0, 1]."""
    a = (pred.float().clamp(-1, 1) + 1) / 2
    b = (target.float().clamp(-1, 1) + 1) / 2
    mse = ((a - b) ** 2).flatten(1).mean(1).clamp_min(1e-10)
    return (-10 * torch.log10(mse)).mean()


def ssim(pred: torch.Tensor, target: torch.Tensor, window: int = 11, sigma: float = 1.5):
    """Mean SSIM (Wang et al. 2004, Gaussian window 11, sigma 1.5) of frames in [-1, 1]."""
    a = (pred.float().clamp(-1, 1) + 1) / 2
    b = (target.float().clamp(-1, 1) + 1) / 2
    window = min(window, a.shape[-1], a.shape[-2])
    coords = torch.arange(window, dtype=torch.float32, device=a.device) - (window - 1) / 2
    g = torch.exp(-(coords**2) / (2 * sigma**2))
    g = g / g.sum()
    c = a.shape[1]
    kernel = (g[:, None] * g[None, :]).expand(c, 1, window, window)

    def blur(x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(x, kernel, groups=c)

    c1, c2 = 0.01**2, 0.03**2
    mu_a, mu_b = blur(a), blur(b)
    var_a = blur(a * a) - mu_a**2
    var_b = blur(b * b) - mu_b**2
    cov = blur(a * b) - mu_a * mu_b
    s = ((2 * mu_a * mu_b + c1) * (2 * cov + c2)) / (
        (mu_a**2 + mu_b**2 + c1) * (var_a + var_b + c2)
    )
    return s.mean()


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@torch.no_grad()
def reconstruction_metrics(ae: Autoencoder, frames: torch.Tensor, chunk: int = 32) -> dict:
    """Encode then decode `frames` (n c h w or b c f h w, in [-1, 1]): PSNR (dB), SSIM, and
    frames per second for each direction on the autoencoder's device."""
    if frames.ndim == 5:
        frames = rearrange(frames, "b c f h w -> (b f) c h w")
    device, _ = ae._compute_place(frames)
    n = frames.shape[0]
    _sync(device)
    t0 = time.perf_counter()
    z = ae.encode(frames, chunk=chunk)
    _sync(device)
    t1 = time.perf_counter()
    rec = ae.decode(z, chunk=chunk)
    _sync(device)
    t2 = time.perf_counter()
    return {
        "psnr": float(psnr(rec, frames)),
        "ssim": float(ssim(rec, frames)),
        "encode_fps": n / max(t1 - t0, 1e-9),
        "decode_fps": n / max(t2 - t1, 1e-9),
    }


# ---- saving and loading ----------------------------------------------------------------------


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


# ---- training --------------------------------------------------------------------------------


class PatchDiscriminator(nn.Module):
    """PatchGAN discriminator (Isola et al. 2017) with GroupNorm: one logit per image patch."""

    def __init__(self, in_channels: int = 3, channels: int = 64, num_layers: int = 3):
        super().__init__()
        layers: list[nn.Module] = [nn.Conv2d(in_channels, channels, 4, 2, 1), nn.LeakyReLU(0.2)]
        ch = channels
        for i in range(1, num_layers + 1):
            out = channels * min(2**i, 8)
            stride = 2 if i < num_layers else 1
            layers += [nn.Conv2d(ch, out, 4, stride, 1), group_norm(out), nn.LeakyReLU(0.2)]
            ch = out
        layers.append(nn.Conv2d(ch, 1, 4, 1, 1))
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class AutoencoderModule(L.LightningModule):
    """Trains a FrameAutoencoder on `batch["image"]`: L1 (edge-weighted with `edge_weight`) +
    Sobel-gradient L1 + KL, optionally a hinge PatchGAN loss with LDM's adaptive weight after
    `disc_start` steps. The latent scale is
    measured on the validation set each validation epoch and on `scale_batches` training batches
    when fitting ends, so checkpoints and exports carry it.

    `init_from` starts from a trained autoencoder (any `load_autoencoder` path); with
    `freeze_encoder` only the decoder trains and the latent space (and its scale) stays exactly as
    it was, so diffusion models already trained on those latents keep working with the new decoder.
    """

    def __init__(
        self,
        in_channels: int = 3,
        latent_channels: int = 4,
        base_channels: int = 64,
        channel_mult: Sequence[int] = (1, 2, 4),
        num_res_blocks: int = 1,
        mid_attention: bool = True,
        norm_groups: int = 32,
        lr: float = 2e-4,
        weight_decay: float = 0.0,
        kl_weight: float = 1e-6,
        gradient_weight: float = 1.0,
        edge_weight: float = 0.0,
        sample_posterior: bool = True,
        disc_weight: float = 0.0,
        disc_start: int = 0,
        disc_channels: int = 64,
        scale_batches: int = 16,
        init_from: str | None = None,
        freeze_encoder: bool = False,
    ):
        super().__init__()
        self.save_hyperparameters()
        self.autoencoder = FrameAutoencoder(
            in_channels, latent_channels, base_channels, list(channel_mult), num_res_blocks,
            mid_attention, norm_groups,
        )  # fmt: skip
        if init_from is not None:
            self._load_initial(init_from)
        if freeze_encoder:
            self.autoencoder.encoder.requires_grad_(False)
        self.discriminator = PatchDiscriminator(in_channels, disc_channels) if disc_weight else None
        self.automatic_optimization = self.discriminator is None
        self._val_stats = torch.zeros(3, dtype=torch.float64)

    def _load_initial(self, path: str) -> None:
        source = load_autoencoder(path)
        if autoencoder_record(source)["config"] | {"scale_factor": 0, "shift": 0} != (
            autoencoder_record(self.autoencoder)["config"] | {"scale_factor": 0, "shift": 0}
        ):
            raise UserError(
                f"{path}: init_from autoencoder has config {source.config()}, but this model is "
                f"{self.autoencoder.config()} (the architecture arguments must match)"
            )
        self.autoencoder.load_state_dict(source.state_dict())

    def train(self, mode: bool = True) -> AutoencoderModule:
        """A frozen encoder stays in eval mode."""
        super().train(mode)
        if self.hparams.freeze_encoder:
            self.autoencoder.encoder.eval()
        return self

    def configure_optimizers(self):
        hp = self.hparams
        params = [p for p in self.autoencoder.parameters() if p.requires_grad]
        opt = torch.optim.AdamW(params, lr=hp.lr, betas=(0.9, 0.99), weight_decay=hp.weight_decay)
        if self.discriminator is None:
            return opt
        opt_d = torch.optim.AdamW(self.discriminator.parameters(), lr=hp.lr, betas=(0.5, 0.9))
        return [opt, opt_d]

    def _reconstruct(self, x: torch.Tensor, sample: bool):
        with torch.set_grad_enabled(torch.is_grad_enabled() and not self.hparams.freeze_encoder):
            mean, logvar = self.autoencoder.encode_moments(x)
        z = mean + torch.exp(0.5 * logvar) * torch.randn_like(mean) if sample else mean
        return self.autoencoder._decode_frames(z), mean, logvar

    def _losses(self, x: torch.Tensor, rec: torch.Tensor, mean, logvar) -> dict:
        hp = self.hparams
        l1 = (rec - x).abs().mean()
        grad = sobel_l1(rec, x)
        kl = kl_divergence(mean, logvar)
        pixel = edge_weighted_l1(rec, x, hp.edge_weight) if hp.edge_weight else l1
        rec_loss = pixel + hp.gradient_weight * grad
        return {
            "l1": l1,
            "grad": grad,
            "kl": kl,
            "rec": rec_loss,
            "loss": rec_loss + hp.kl_weight * kl,
        }

    def _adaptive_weight(self, rec_loss: torch.Tensor, g_loss: torch.Tensor) -> torch.Tensor:
        """LDM/VQGAN: balance the GAN term against reconstruction at the decoder's last layer."""
        last = self.autoencoder.decoder.conv_out.weight
        g_rec = torch.autograd.grad(rec_loss, last, retain_graph=True)[0]
        g_gan = torch.autograd.grad(g_loss, last, retain_graph=True)[0]
        weight = g_rec.norm() / (g_gan.norm() + 1e-4)
        return weight.clamp(0.0, 1e4).detach() * self.hparams.disc_weight

    def training_step(self, batch, batch_idx):
        x = _images(batch)
        rec, mean, logvar = self._reconstruct(x, self.hparams.sample_posterior)
        losses = self._losses(x, rec, mean, logvar)
        self.log_dict(
            {f"train/{k}": v.detach() for k, v in losses.items() if k != "rec"}, prog_bar=False
        )
        self.log("train/psnr", psnr(rec.detach(), x), prog_bar=True)
        if self.discriminator is None:
            return losses["loss"]

        opt, opt_d = self.optimizers()
        loss = losses["loss"]
        gan_on = self.global_step // 2 >= self.hparams.disc_start  # two optimizer steps per batch
        if gan_on:
            g_loss = -self.discriminator(rec).mean()
            weight = self._adaptive_weight(losses["rec"], g_loss)
            loss = loss + weight * g_loss
            self.log_dict({"train/g_loss": g_loss.detach(), "train/d_weight": weight})
        opt.zero_grad(set_to_none=True)
        self.manual_backward(loss)
        opt.step()
        if gan_on:
            real, fake = self.discriminator(x), self.discriminator(rec.detach())
            d_loss = 0.5 * (F.relu(1 - real).mean() + F.relu(1 + fake).mean())
            opt_d.zero_grad(set_to_none=True)
            self.manual_backward(d_loss)
            opt_d.step()
            self.log("train/d_loss", d_loss.detach())
        else:
            opt_d.step()  # keeps global_step counting two optimizer steps per batch
        return None

    def on_validation_epoch_start(self) -> None:
        self._val_stats.zero_()

    def validation_step(self, batch, batch_idx):
        x = _images(batch)
        rec, mean, logvar = self._reconstruct(x, sample=False)
        losses = self._losses(x, rec, mean, logvar)
        self.log("val/l1", losses["l1"], prog_bar=True)
        self.log("val/psnr", psnr(rec, x), prog_bar=True)
        self.log("val/loss", losses["loss"])
        m = mean.detach().double().cpu()
        self._val_stats += torch.stack([m.sum(), (m**2).sum(), torch.tensor(m.numel())])

    def on_validation_epoch_end(self) -> None:
        total, total_sq, count = self._val_stats.tolist()
        if self.trainer.sanity_checking or count == 0 or self.hparams.freeze_encoder:
            return
        if self.trainer.world_size > 1:
            stats = self.all_gather(self._val_stats.to(self.device)).reshape(-1, 3).sum(0)
            total, total_sq, count = stats.tolist()
        mu = total / count
        self.autoencoder.shift = mu
        self.autoencoder.scale_factor = 1.0 / math.sqrt(max(total_sq / count - mu**2, 1e-12))
        self.log_dict({"latent/scale_factor": self.autoencoder.scale_factor})

    def on_fit_end(self) -> None:
        loader = getattr(self.trainer, "train_dataloader", None)
        if loader is None or self.hparams.scale_batches <= 0 or self.hparams.freeze_encoder:
            return
        was_training = self.autoencoder.training
        self.autoencoder.eval()
        measure_scale(self.autoencoder, loader, max_batches=self.hparams.scale_batches)
        self.autoencoder.train(was_training)
