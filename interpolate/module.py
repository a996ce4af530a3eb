"""The interpolation stage as a LightningModule: frame-conditioned video diffusion in latent space.

Built from plain arguments (the `model:` keys of configs/interpolate/*.yaml): a frozen frame
autoencoder, the keyframe U-Net inflated with temporal layers (`VideoUNet`), an optional text
encoder and frame-rate conditioning. Each training clip gets a random mask of known frames
(`interpolate.masks`); the EDM loss counts the unknown frames only. An EMA copy of the trained
weights is what validation, sampling and `save_pretrained` use. `init_from` starts the spatial
layers from a trained keyframe model.
"""

from __future__ import annotations

import copy
import inspect
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import lightning as L
import torch
from einops import rearrange
from torch import nn

from interpolate.flow import check_init
from interpolate.masks import check_weights, draw_mask
from interpolate.motion import MotionPrior, model_prior
from interpolate.temporal import VideoUNet
from keyframe import latents as latent_cache
from keyframe import pretrained
from keyframe.autoencoder import autoencoder_record
from keyframe.diffusion import Denoiser, drop_conditioning, sample_training_sigmas
from keyframe.errors import UserError
from keyframe.init_weights import find_prefix, load_sub_state, read_state, sub_state
from keyframe.latents import latent_batch
from keyframe.module import (
    adamw_with_warmup,
    check_sampling_options,
    check_training_options,
    lerp_ema,
    prebuilt_autoencoder,
    stage_autoencoder,
    text_encoder,
)
from keyframe.sampling import Callback, cfg_denoiser
from keyframe.sampling import sample as run_sampler
from keyframe.text import TextEncoder

VAL_SIGMAS = (0.05, 0.2, 0.5, 1.0, 2.0, 5.0)  # fixed noise levels of the validation loss
VAL_SEED = 0
SHIPPED_DIR = Path(__file__).resolve().parent / "weights"
_prebuilt_autoencoder = prebuilt_autoencoder  # the keyframe stage's, which serves both stages


def _text_layer(key: str) -> bool:
    """U-Net parameters that only exist with text conditioning (cross-attention, pooled)."""
    return key.startswith("pooled_embed.") or ".attn.cross_attn." in key or ".attn.norm2." in key


class InterpolateModule(L.LightningModule):
    """Frame-conditioned video diffusion (EDM) in the latent space of a frozen frame autoencoder.

    U-Net arguments match KeyframeModule's, so a keyframe model's weights load via `init_from`
    (a keyframe .ckpt, or a folder / .safetensors file of its weights; an interpolation .ckpt
    continues from all its live weights). `new_layers_lr` trains the layers a keyframe model
    lacks (temporal, fps, input conv) at their own learning rate. Temporal layers:
    `temporal_attention` (conv only when False), `temporal_heads`, `max_relative_distance`.
    `text_conditioning` adds a text tower (as the keyframe stage's; prompts dropped to "" at
    `cond_drop_rate`); `fps_conditioning` embeds the clip's frame rate. `mask_weights` sets the
    mixture of training masks (interpolate.masks); each batch is cut to a random length in
    [min_frames, num_frames]. Sampling defaults: sample_* and `context_frames` (known frames
    carried from one window into the next); `sample_init` "flow" starts the unknown frames from
    flow in-betweens along motion paths through the keys (interpolate.paths), noised to
    `sample_init_sigma`, instead of pure noise (see interpolate.inbetween). A pretrained folder
    with a `motion/` prior (interpolate.motion) gives it as `motion_prior`: the paths flow init
    moves pixels along.
    """

    motion_prior: MotionPrior | None = None

    def __init__(
        self,
        image_size: int = 64,
        num_frames: int = 16,
        autoencoder: str = "identity",
        model_channels: int = 64,
        channel_mult: Sequence[int] = (1, 2, 2),
        num_res_blocks: int = 2,
        attention_levels: Sequence[int] = (1, 2),
        num_heads: int = 4,
        dropout: float = 0.0,
        gradient_checkpointing: bool = False,
        position_bands: int = 0,
        temporal_attention: bool = True,
        temporal_heads: int = 4,
        max_relative_distance: int = 16,
        text_conditioning: bool = False,
        text_model_name: str | None = None,
        text_pretrained: str | None = None,
        text_width: int = 256,
        text_layers: int = 4,
        text_heads: int = 4,
        text_context_length: int = 77,
        text_vocab_size: int = 49408,
        train_text: bool = True,
        cond_drop_rate: float = 0.1,
        fps_conditioning: bool = True,
        mask_weights: dict[str, float] | None = None,
        min_frames: int = 3,
        sigma_data: float = 0.5,
        p_mean: float = -1.2,
        p_std: float = 1.2,
        lr: float = 1e-4,
        new_layers_lr: float | None = None,
        weight_decay: float = 0.0,
        warmup_steps: int = 0,
        ema_decay: float = 0.999,
        sample_steps: int = 25,
        sample_guidance: float = 1.0,
        sample_sampler: str = "dpmpp_2m",
        sample_fps: float = 24.0,
        context_frames: int = 2,
        sample_init: str = "noise",
        sample_init_sigma: float = 0.3,
        init_from: str | None = None,
    ):
        super().__init__()
        self.save_hyperparameters()
        self.mask_weights = check_weights(mask_weights)
        if not 2 <= min_frames <= num_frames:
            raise UserError(
                f"model.min_frames: expected 2..num_frames ({num_frames}), got {min_frames}"
            )
        check_training_options(cond_drop_rate, ema_decay)
        if not sample_fps > 0:
            raise UserError(f"model.sample_fps: expected a positive frame rate, got {sample_fps}")
        check_sampling_options(sample_steps, sample_guidance, sample_sampler)
        check_init(sample_init, sample_init_sigma)

        self.autoencoder, self.size_multiple = stage_autoencoder(
            autoencoder, image_size, channel_mult
        )
        self.text = text_encoder(self.hparams) if text_conditioning else None
        net = VideoUNet(
            latent_channels=self.autoencoder.latent_channels,
            model_channels=model_channels,
            channel_mult=list(channel_mult),
            num_res_blocks=num_res_blocks,
            attention_levels=list(attention_levels),
            num_heads=num_heads,
            context_dim=self.text.dim if self.text is not None else None,
            pooled_dim=self.text.pooled_dim if self.text is not None else None,
            dropout=dropout,
            checkpoint=gradient_checkpointing,
            temporal_attention=temporal_attention,
            temporal_heads=temporal_heads,
            max_relative_distance=max_relative_distance,
            fps_conditioning=fps_conditioning,
            position_bands=position_bands,
        )
        self.denoiser = Denoiser(net, sigma_data)
        self.ema_net: VideoUNet | None = None
        self.ema_text: TextEncoder | None = None
        self._make_ema()
        self._initialised = init_from is None

    # ---- pieces other code uses ---------------------------------------------------------------

    @property
    def latent_channels(self) -> int:
        return self.autoencoder.latent_channels

    def _make_ema(self) -> None:
        """(Re)start the EMA copies from the live weights."""
        if self.hparams.ema_decay <= 0:
            return
        self.ema_net = copy.deepcopy(self.denoiser.net).requires_grad_(False).eval()
        if self.text is not None and not self.text.frozen:
            self.ema_text = copy.deepcopy(self.text).requires_grad_(False).eval()

    def train(self, mode: bool = True) -> InterpolateModule:
        """The frozen autoencoder and the EMA copies stay in eval mode."""
        super().train(mode)
        for frozen in (self.autoencoder, self.ema_net, self.ema_text):
            if frozen is not None:
                frozen.eval()
        return self

    def trainable_parameters(self) -> list[nn.Parameter]:
        params = list(self.denoiser.parameters())
        if self.text is not None and not self.text.frozen:
            params += list(self.text.parameters())
        return params

    def encode_text(self, prompts: Sequence[str], ema: bool = False) -> dict[str, torch.Tensor]:
        """Cross-attention conditioning {context, context_mask, pooled}; {} without text."""
        if self.text is None:
            return {}
        text = self.ema_text if ema and self.ema_text is not None else self.text
        with torch.set_grad_enabled(torch.is_grad_enabled() and not text.frozen and not ema):
            tokens, pooled, mask = text(list(prompts))
        return {"context": tokens, "context_mask": mask, "pooled": pooled}

    def sampling_denoiser(self) -> Denoiser:
        """The Denoiser with the EMA network (the trained one if EMA is off)."""
        if self.ema_net is None:
            return self.denoiser
        return Denoiser(self.ema_net, self.hparams.sigma_data)

    # ---- initialising from a keyframe model ---------------------------------------------------

    @torch.no_grad()
    def load_keyframe_weights(self, path: str) -> dict[str, list[str]]:
        """Copy a keyframe model's U-Net (its EMA copy when present) and, with text conditioning,
        its text tower into this model. Only temporal layers, the fps embedding and the extra
        input channels may be missing: the input conv's pretrained weights go to the noisy-latent
        channels and the known-latent and mask channels start at zero. Returns what was missing."""
        state = read_state(path)
        if any("temporal" in k for k in state):  # an interpolation checkpoint or exported folder
            for net_prefix in ("denoiser.net.", "net."):
                if net_prefix + "unet.conv_in.weight" in state:
                    return self._load_interpolation_weights(state, path, net_prefix)
        prefix = find_prefix(state, ("conv_in.weight", "time_embed.0.weight", "conv_out.weight"))
        if prefix is None:
            raise UserError(f"model.init_from: {path}: no keyframe U-Net weights found")
        unet = self.denoiser.net.unet
        weights = sub_state(state, prefix)
        if self.text is None:  # a motion model without text: leave the text layers behind
            weights = {k: v for k, v in weights.items() if not _text_layer(k)}
        conv_in = weights.pop("conv_in.weight")
        own = unet.conv_in.weight
        c = self.latent_channels
        if (
            conv_in.shape[0] != own.shape[0]
            or conv_in.shape[1] != c
            or conv_in.shape[2:] != own.shape[2:]
        ):
            raise UserError(
                f"model.init_from: {path}: input conv {tuple(conv_in.shape)} does not fit this "
                f"model ({tuple(own.shape)} with {c} latent channels): U-Net arguments differ"
            )
        widened = torch.zeros_like(own)
        widened[:, :c] = conv_in.to(own)
        weights["conv_in.weight"] = widened
        mismatched = [
            k for k, v in weights.items()
            if k in unet.state_dict() and unet.state_dict()[k].shape != v.shape
        ]  # fmt: skip
        if mismatched:
            raise UserError(
                f"model.init_from: {path}: {mismatched[0]} has another shape here: the U-Net "
                "arguments (model_channels, channel_mult, ...) must match the keyframe model's"
            )
        result = unet.load_state_dict(weights, strict=False)
        bad = [k for k in result.missing_keys if "temporal" not in k]
        if result.unexpected_keys or bad:
            name = (result.unexpected_keys or bad)[0]
            raise UserError(
                f"model.init_from: {path}: U-Net layout differs from this model's ({name}); "
                "use the keyframe model's U-Net arguments and text settings"
            )
        if self.text is not None:
            text_prefix = find_prefix(state, ("tower.token_embedding.weight",))
            if text_prefix is not None:
                error = f"model.init_from: {path}: text tower does not fit"
                load_sub_state(self.text, state, text_prefix, error)
        self._make_ema()
        return {"missing": result.missing_keys}

    def _load_interpolation_weights(
        self, state: dict, path: str, net_prefix: str
    ) -> dict[str, list[str]]:
        """Fine-tuning: every weight from an InterpolateModule checkpoint (its live weights, not
        the lagging EMA) or exported folder (its EMA weights), so a run can continue with other
        settings (lr, mask mix, noise)."""
        parts = {net_prefix: self.denoiser.net, "text.": self.text}
        for prefix, target in parts.items():
            if target is None:
                continue
            error = f"model.init_from: {path}: interpolation weights do not fit"
            load_sub_state(target, state, prefix, error)
        self._make_ema()
        return {"missing": []}

    def setup(self, stage: str) -> None:
        # Before Lightning restores a resumed checkpoint, which then replaces these weights.
        if stage == "fit" and not self._initialised:
            self.load_keyframe_weights(self.hparams.init_from)
            self._initialised = True

    # ---- training -----------------------------------------------------------------------------

    def new_layer(self, name: str) -> bool:
        """Parameters a keyframe model does not provide: temporal layers, the fps embedding and
        the input conv (which gains the known-latent and mask channels)."""
        return "temporal" in name or name.startswith("fps_embed.") or "unet.conv_in." in name

    def configure_optimizers(self):
        hp = self.hparams
        params = self.trainable_parameters()
        if hp.new_layers_lr is None:
            return adamw_with_warmup(params, hp.lr, hp.weight_decay, hp.warmup_steps)
        wanted = {id(p) for p in params}
        new = [
            p
            for n, p in self.denoiser.net.named_parameters()
            if id(p) in wanted and self.new_layer(n)
        ]
        new_ids = {id(p) for p in new}
        rest = [p for p in params if id(p) not in new_ids]
        return adamw_with_warmup(
            rest, hp.lr, hp.weight_decay, hp.warmup_steps, extra=[(new, hp.new_layers_lr)]
        )

    def masked_batch(
        self, batch: dict, length: int, generator: torch.Generator | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Latents of the first `length` frames of each clip (cached, or encoded from "video"),
        reordered by a drawn mask, and the masks (b, 1, length, 1, 1) float (1 = known)."""
        latents = latent_batch(batch, self.autoencoder, "video")[:, :, :length]
        orders, masks = [], []
        for _ in range(latents.shape[0]):
            known, order = draw_mask(length, generator, self.mask_weights)
            orders.append(order)
            masks.append(known)
        order = torch.stack(orders).to(latents.device)
        index = order[:, None, :, None, None].expand(-1, latents.shape[1], -1, *latents.shape[3:])
        latents = latents.gather(2, index)
        mask = torch.stack(masks).to(latents)[:, None, :, None, None]
        return latents, mask

    def _loss(self, denoiser, latents, mask, sigma, cond, fps, noise=None) -> torch.Tensor:
        return denoiser.loss(
            latents, sigma, noise=noise, weight=1 - mask, known=latents * mask, mask=mask,
            fps=fps, **cond,
        )  # fmt: skip

    def _fps(self, batch: dict, n: int) -> torch.Tensor | None:
        if not self.hparams.fps_conditioning:
            return None
        fps = batch.get("fps")
        if fps is None:
            return torch.full((n,), float(self.hparams.sample_fps), device=self.device)
        return torch.as_tensor(fps, dtype=torch.float32, device=self.device).reshape(n)

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        frames = (batch["latent"] if "latent" in batch else batch["video"]).shape[2]
        low = min(self.hparams.min_frames, frames)
        length = int(torch.randint(low, frames + 1, ()))
        latents, mask = self.masked_batch(batch, length)
        n = latents.shape[0]
        cond = {}
        if self.text is not None:
            prompts = drop_conditioning(list(batch["caption"]), self.hparams.cond_drop_rate)
            cond = self.encode_text(prompts)
        sigma = sample_training_sigmas(
            n, self.hparams.p_mean, self.hparams.p_std, device=latents.device
        )
        loss = self._loss(self.denoiser, latents, mask, sigma, cond, self._fps(batch, n))
        self.log("train/loss", loss, prog_bar=True, batch_size=n)
        return loss

    def ema_decay_at(self, step: int) -> float:
        """EMA decay with warm-up, min(ema_decay, (1 + step) / (10 + step))."""
        return min(self.hparams.ema_decay, (1 + step) / (10 + step))

    @torch.no_grad()
    def update_ema(self) -> None:
        weight = 1.0 - self.ema_decay_at(self.global_step)
        lerp_ema(((self.ema_net, self.denoiser.net), (self.ema_text, self.text)), weight)

    def on_fit_start(self) -> None:
        latent_cache.prepare(self, self.trainer.datamodule)

    def optimizer_step(self, *args: Any, **kwargs: Any) -> None:
        # Right after each optimizer step, before any callback runs: a checkpoint saved at this
        # step (ModelCheckpoint runs before a module's on_train_batch_end) holds its EMA.
        super().optimizer_step(*args, **kwargs)
        self.update_ema()

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        checkpoint["autoencoder_config"] = autoencoder_record(self.autoencoder)

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        generator = torch.Generator().manual_seed(VAL_SEED + batch_idx)
        latents, mask = self.masked_batch(batch, batch["video"].shape[2], generator)
        n = latents.shape[0]
        noise = torch.randn(latents.shape, generator=generator).to(latents)
        cond = self.encode_text(batch["caption"], ema=True) if self.text is not None else {}
        denoiser = self.sampling_denoiser()
        losses = []
        for sigma in VAL_SIGMAS:
            level = torch.full((n,), sigma, device=latents.device)
            loss = self._loss(denoiser, latents, mask, level, cond, self._fps(batch, n), noise)
            self.log(f"val/loss_sigma_{sigma:g}", loss, batch_size=n, sync_dist=True)
            losses.append(loss)
        self.log(
            "val/loss", torch.stack(losses).mean(), prog_bar=True, batch_size=n, sync_dist=True
        )

    # ---- sampling (used by interpolate.inbetween) ---------------------------------------------

    def check_frame_size(self, height: int, width: int) -> None:
        m = self.size_multiple
        if min(height, width) < 1 or height % m or width % m:
            raise UserError(f"frame size {height}x{width}: must be multiples of {m} for this model")

    @torch.no_grad()
    def encode_frames(self, frames: torch.Tensor) -> torch.Tensor:
        """(n, c, H, W) images in [-1, 1] -> (n, latent, h, w) latents on the model's device."""
        self.check_frame_size(*frames.shape[-2:])
        ae = self.autoencoder
        return ae.encode(frames.to(self.device, next(iter(self.parameters())).dtype)).float()

    @torch.no_grad()
    def decode_frames(self, latents: torch.Tensor) -> torch.Tensor:
        """(n, latent, h, w) -> (n, c, H, W) float images in [-1, 1] on the CPU."""
        return self.autoencoder.decode(latents).float().clamp(-1, 1).cpu()

    @torch.no_grad()
    def sampling_conditions(
        self, prompt: str | None = None, guidance: float | None = None
    ) -> dict[str, Any]:
        """Text conditioning for sampling: {"cond", "uncond", "guidance"}, encoded once and
        shared by every window. Without a text model a prompt is refused."""
        guidance = self.hparams.sample_guidance if guidance is None else guidance
        if self.text is None:
            if prompt:
                raise UserError("prompt: this interpolation model has no text conditioning")
            return {"cond": {}, "uncond": None, "guidance": 1.0}
        if prompt is not None and not isinstance(prompt, str):
            raise UserError(f"prompt: expected text, got {type(prompt).__name__}")
        both = self.encode_text(["", prompt or ""], ema=True)
        uncond = {k: v[:1] for k, v in both.items()}
        cond = {k: v[1:] for k, v in both.items()}
        if not prompt or guidance == 1:
            return {"cond": cond, "uncond": None, "guidance": 1.0}
        return {"cond": cond, "uncond": uncond, "guidance": float(guidance)}

    @torch.no_grad()
    def sample_window(
        self,
        latents: Sequence[torch.Tensor | None],
        known: Sequence[bool],
        conditions: Mapping[str, Any],
        steps: int | None = None,
        sampler: str | None = None,
        fps: float | None = None,
        generator: torch.Generator | None = None,
        callback: Callback | None = None,
        init: torch.Tensor | None = None,
        init_sigma: float | None = None,
    ) -> torch.Tensor:
        """Sample one window: `latents` (c, h, w) per frame (None where unknown), `known` per
        frame. Returns (f, c, h, w) latents with the known frames exactly as given.

        `init` (f, c, h, w): latents to refine from noise level `init_sigma` (SDEdit) instead of
        drawing the unknown frames from pure noise."""
        hp = self.hparams
        steps = hp.sample_steps if steps is None else steps
        sampler = hp.sample_sampler if sampler is None else sampler
        check_sampling_options(steps, conditions["guidance"], sampler)
        reference = next(z for z in latents if z is not None)
        device = self.device
        frames = [
            z.to(device).float() if k else torch.zeros_like(reference, device=device).float()
            for z, k in zip(latents, known, strict=True)
        ]
        known_latents = rearrange(torch.stack(frames), "f c h w -> 1 c f h w")
        mask = torch.tensor(list(known), device=device)[None, None, :, None, None]
        fps_value = (hp.sample_fps if fps is None else fps) if hp.fps_conditioning else None
        extra = {
            "known": known_latents,
            "mask": mask.float(),
            "fps": None if fps_value is None else torch.tensor([float(fps_value)], device=device),
        }
        base = self.sampling_denoiser()
        dtype = next(base.parameters()).dtype

        def raw(x: torch.Tensor, sigma: torch.Tensor, **cond: Any) -> torch.Tensor:
            cond = {
                k: v.to(dtype) if isinstance(v, torch.Tensor) and v.is_floating_point() else v
                for k, v in cond.items()
            }
            return base(x.to(dtype), sigma, **cond).float()

        cond = {**conditions["cond"], **extra}
        if conditions["uncond"] is not None:
            uncond = {**conditions["uncond"], **extra}
            guided = cfg_denoiser(raw, cond, uncond, conditions["guidance"])
        else:

            def guided(x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
                return raw(x, sigma, **cond)

        def denoise(x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
            return torch.where(mask, known_latents, guided(x, sigma))

        shape = (1, *known_latents.shape[1:])
        noise = torch.randn(shape, generator=generator).to(device)
        was_training = self.training
        self.eval()
        try:
            refine = {}
            if init is not None:
                check_init("flow", init_sigma)
                start = rearrange(init.to(device).float(), "f c h w -> 1 c f h w")
                if start.shape != known_latents.shape:
                    raise ValueError(f"init: expected {tuple(known_latents.shape)} latents")
                refine = {
                    "sigma_max": float(init_sigma),
                    "init": torch.where(mask, known_latents, start),
                }
            out = run_sampler(
                denoise, noise, steps, sampler, generator=generator, callback=callback, **refine
            )
        finally:
            self.train(was_training)
        out = torch.where(mask, known_latents, out)
        return rearrange(out[0], "c f h w -> f c h w")

    # ---- saving and loading -------------------------------------------------------------------

    def save_pretrained(
        self,
        directory: str | os.PathLike,
        fp16: bool = True,
        overwrite: bool = False,
        shared_autoencoder: str | None = None,
        int8: bool = False,
    ) -> Path:
        """Write the sampling weights and config in the keyframe stage's layout (see
        keyframe/pretrained.py): `model.safetensors` (EMA network as `net.*`, text tower as
        `text.*`, autoencoder as `autoencoder.*` unless `shared_autoencoder` names the shipped
        keyframe model it comes from; fp16 if asked, int8 weight matrices if `int8`) and
        `config.json`, atomically."""
        names = inspect.signature(InterpolateModule).parameters
        hparams = {k: v for k, v in self.hparams.items() if k in names}
        return pretrained.write_pretrained(
            directory, self, "InterpolateModule", hparams, fp16, overwrite, shared_autoencoder,
            int8,
        )  # fmt: skip

    @classmethod
    def from_pretrained(
        cls, name_or_path: str | os.PathLike, device: str | torch.device = "cpu"
    ) -> InterpolateModule:
        """A model ready to sample from a folder written by `save_pretrained`, a training .ckpt,
        or the name of a model shipped in interpolate/weights/<name>/; on `device`, in eval mode,
        float32, the EMA weights as its only weights. Nothing is read from the files it was
        trained with (no keyframe init, no text checkpoint; the autoencoder from its record)."""
        path = resolve_model(name_or_path)
        model = pretrained.load_pretrained(
            InterpolateModule, path, device, ema_decay=0.0, text_pretrained=None, init_from=None
        )
        if path.is_dir():
            # Not a submodule: the prior ships in its own folder and stays out of state_dict.
            object.__setattr__(model, "motion_prior", model_prior(path))
        return model


def shipped_models() -> list[str]:
    """Names of the interpolation models shipped in interpolate/weights/."""
    return pretrained.shipped_models(SHIPPED_DIR)


def resolve_model(name_or_path: str | os.PathLike) -> Path:
    """The folder or .ckpt an interpolation model name or path refers to; a path wins."""
    return pretrained.resolve_model(name_or_path, SHIPPED_DIR, what="interpolation model")
