"""The interpolation stage as a LightningModule: frame-conditioned video diffusion in latent space.

Built from plain arguments (the `model:` keys of configs/interpolate/*.yaml): a frozen frame
autoencoder, the keyframe U-Net inflated with temporal layers (`VideoUNet`), an optional text
encoder and frame-rate conditioning. Each training clip gets a random mask of known frames
(`interpolate.masks`); the EDM loss counts the unknown frames only. An EMA copy of the trained
weights is what validation, sampling and `save_pretrained` use. `init_from` starts the spatial
layers from a trained keyframe model (interpolate.init_weights); the network and its checks are
interpolate.network, sampling is interpolate.inference.
"""

from __future__ import annotations

import inspect
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import lightning as L
import torch
from torch import nn

from interpolate import inference, init_weights
from interpolate.masks import draw_mask
from interpolate.motion import FOLDER, MotionPrior, model_prior
from interpolate.network import check_interpolate_options, video_unet
from keyframe import hub, pretrained
from keyframe import latents as latent_cache
from keyframe.autoencoder_files import autoencoder_record
from keyframe.diffusion import Denoiser, drop_conditioning, sample_training_sigmas
from keyframe.latents import latent_batch
from keyframe.stage import (
    adamw_with_warmup,
    ema_copies,
    lerp_ema,
    stage_autoencoder,
    text_encoder,
)

VAL_SIGMAS = (0.05, 0.2, 0.5, 1.0, 2.0, 5.0)  # fixed noise levels of the validation loss
VAL_SEED = 0
SHIPPED_DIR = Path(__file__).resolve().parent / "weights"


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
        self.mask_weights = check_interpolate_options(self.hparams)
        self.autoencoder, self.size_multiple = stage_autoencoder(
            autoencoder, image_size, channel_mult
        )
        self.text = text_encoder(self.hparams) if text_conditioning else None
        net = video_unet(self.hparams, self.autoencoder.latent_channels, self.text)
        self.denoiser = Denoiser(net, sigma_data)
        self.ema_net, self.ema_text = ema_copies(net, self.text) if ema_decay > 0 else (None, None)
        self._initialised = init_from is None

    # ---- pieces other code uses ---------------------------------------------------------------

    @property
    def latent_channels(self) -> int:
        return self.autoencoder.latent_channels

    def _make_ema(self) -> None:
        """(Re)start the EMA copies from the live weights."""
        if self.hparams.ema_decay > 0:
            self.ema_net, self.ema_text = ema_copies(self.denoiser.net, self.text)

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

    def load_keyframe_weights(self, path: str) -> dict[str, list[str]]:
        """Copy a keyframe model's U-Net and text tower (or every weight of an interpolation
        model) into this model; see interpolate.init_weights. Returns what was missing."""
        return init_weights.load_keyframe_weights(self, path)

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

    # ---- sampling (used by interpolate.inbetween): interpolate.inference's functions, with the
    # module as their first argument

    check_frame_size = inference.check_frame_size
    encode_frames = inference.encode_frames
    decode_frames = inference.decode_frames
    sampling_conditions = inference.sampling_conditions
    sample_window = inference.sample_window

    # ---- saving and loading (keyframe.hub: the `interpolate` kind) ------------------------------

    def save_pretrained(self, directory: str | os.PathLike, **options: Any) -> Path:
        """`hub.save_pretrained(self, directory, **options)`; options: see `save_interpolate`."""
        return save_interpolate(self, directory, **options)

    @classmethod
    def from_pretrained(
        cls, name_or_path: str | os.PathLike, device: str | torch.device = "cpu"
    ) -> InterpolateModule:
        """`hub.from_pretrained(name_or_path, kind="interpolate", device=device)`: a folder,
        a training .ckpt or a name shipped in interpolate/weights/ (see `load_interpolate`)."""
        return hub.from_pretrained(name_or_path, "interpolate", device)


def save_interpolate(
    module: InterpolateModule,
    directory: str | os.PathLike,
    fp16: bool = True,
    overwrite: bool = False,
    shared_autoencoder: str | None = None,
    int8: bool = False,
) -> Path:
    """The `interpolate` kind's saver: the keyframe stage's layout (keyframe/pretrained.py):
    `model.safetensors` (EMA network as `net.*`, text tower as `text.*`, autoencoder as
    `autoencoder.*` unless `shared_autoencoder` names the shipped keyframe model it comes from;
    fp16 if asked, int8 weight matrices if `int8`), `config.json`, and the motion prior (if
    any) in `motion/`; atomically."""
    names = inspect.signature(InterpolateModule).parameters
    hparams = {k: v for k, v in module.hparams.items() if k in names}
    written = pretrained.write_pretrained(
        directory, module, "InterpolateModule", hparams, fp16, overwrite, shared_autoencoder, int8
    )
    if module.motion_prior is not None:
        hub.save_pretrained(module.motion_prior, written / FOLDER, fp16=fp16, overwrite=overwrite)
    return written


def load_interpolate(path: Path, device: str | torch.device = "cpu") -> InterpolateModule:
    """The `interpolate` kind's loader: a model ready to sample from a folder or a training
    .ckpt; on `device`, in eval mode, float32, the EMA weights as its only weights. Nothing is
    read from the files it was trained with (no keyframe init, no text checkpoint; the
    autoencoder from its record); a folder's `motion/` prior becomes `motion_prior`."""
    model = pretrained.load_pretrained(
        InterpolateModule, path, device, ema_decay=0.0, text_pretrained=None, init_from=None
    )
    if path.is_dir():
        # Not a submodule: the prior ships in its own folder and stays out of state_dict.
        object.__setattr__(model, "motion_prior", model_prior(path))
    return model
