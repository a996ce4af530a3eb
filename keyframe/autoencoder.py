"""The frame autoencoder: the latent space both diffusion stages work in (as in latent diffusion).

`FrameAutoencoder` is a KL-regularised convolutional autoencoder (Rombach et al. 2022) with a
downsampling factor of 2**(len(channel_mult) - 1); `IdentityAutoencoder` is pixel space behind the
same interface. Both take images `n c h w` or videos `b c f h w` in [-1, 1] and run `chunk` frames
at a time, so long videos never hold all frames' activations; chunks run on the model's device and
results come back on the input's device. Latents are normalised, `(mean - shift) * scale_factor`,
with the scale and shift measured on data (`measure_scale`) and stored with the weights.
Files: keyframe.autoencoder_files; training: keyframe.autoencoder_training; PSNR/SSIM:
keyframe.frame_metrics.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from keyframe.errors import UserError
from keyframe.layers import Downsample, ResBlock, SelfAttention2d, Upsample, group_norm


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


def batch_images(batch) -> torch.Tensor:
    """The images of a batch: a tensor, or the "image" entry of a dict."""
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
        x = batch_images(batch)
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
