"""The interpolation stage's trainer: a thin LightningModule around an InterpolateModel.

Built from plain arguments (the `model:` keys of configs/interpolate/*.yaml): the network's
(InterpolateConfig) and the training options. Each training clip gets a random mask of known
frames (`interpolate.masks`); the EDM loss counts the unknown frames only. An EMA copy of the
trained weights is what validation, `pipeline()` and a saved folder use. `init_from` starts the
spatial layers from a trained keyframe model (interpolate.init_weights). Inference is
interpolate.pipeline's; the `interpolate` kind's saver and loader are at the end.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

from interpolate import init_weights
from interpolate.masks import draw_mask
from interpolate.model import InterpolateConfig, InterpolateModel
from interpolate.motion import FOLDER, model_prior
from interpolate.network import check_interpolate_options
from interpolate.pipeline import InterpolatePipeline
from keyframe import hub, pretrained
from keyframe import latents as latent_cache
from keyframe.autoencoder_files import autoencoder_record
from keyframe.diffusion import drop_conditioning, sample_training_sigmas
from keyframe.errors import UserError
from keyframe.latents import latent_batch
from keyframe.stage import adamw_with_warmup
from keyframe.trainer import StageTrainer

VAL_SIGMAS = (0.05, 0.2, 0.5, 1.0, 2.0, 5.0)  # fixed noise levels of the validation loss
VAL_SEED = 0
SHIPPED_DIR = Path(__file__).resolve().parent / "weights"


class InterpolateModule(StageTrainer):
    """Frame-conditioned video diffusion (EDM) in the latent space of a frozen frame autoencoder.

    The arguments are the training options below and, as keywords, the network's options (the
    fields of interpolate.model.InterpolateConfig; the U-Net's and text tower's are the keyframe
    stage's, StageConfig), so a keyframe model's weights load via `init_from`
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
    with a `motion/` prior (interpolate.motion) hands it to its pipeline as `motion_prior`.
    """

    CONFIG = InterpolateConfig  # the network's options

    def __init__(
        self,
        mask_weights: dict[str, float] | None = None,
        min_frames: int = 3,
        cond_drop_rate: float = 0.1,
        p_mean: float = -1.2,
        p_std: float = 1.2,
        lr: float = 1e-4,
        new_layers_lr: float | None = None,
        weight_decay: float = 0.0,
        warmup_steps: int = 0,
        ema_decay: float = 0.999,
        init_from: str | None = None,
        **network: Any,
    ):
        super().__init__()
        self.save_hyperparameters()
        try:  # the network's options: InterpolateConfig's fields (LightningCLI reads them there)
            config = InterpolateConfig(**network)
        except TypeError as err:
            raise UserError(f"model: {err}") from None
        self.hparams.update({k: v for k, v in config.to_dict().items() if k not in network})
        self.mask_weights = check_interpolate_options(self.hparams)
        self.model = InterpolateModel(config)
        self.start_ema()
        self._initialised = init_from is None

    # ---- sampling with the EMA weights (the rest of the EMA: keyframe.trainer) -----------------

    def pipeline(self) -> InterpolatePipeline:
        """An InterpolatePipeline on the EMA weights (shared, not copied), no motion prior."""
        return InterpolatePipeline(self.sampling_model())

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
            cond = self.model.encode_text(prompts)
        sigma = sample_training_sigmas(
            n, self.hparams.p_mean, self.hparams.p_std, device=latents.device
        )
        loss = self._loss(self.denoiser, latents, mask, sigma, cond, self._fps(batch, n))
        self.log("train/loss", loss, prog_bar=True, batch_size=n)
        return loss

    def on_fit_start(self) -> None:
        latent_cache.prepare(self, self.trainer.datamodule)

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        checkpoint["autoencoder_config"] = autoencoder_record(self.autoencoder)

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        generator = torch.Generator().manual_seed(VAL_SEED + batch_idx)
        latents, mask = self.masked_batch(batch, batch["video"].shape[2], generator)
        n = latents.shape[0]
        noise = torch.randn(latents.shape, generator=generator).to(latents)
        sampling = self.sampling_model()
        cond, denoiser = sampling.encode_text(batch["caption"]), sampling.denoiser
        losses = []
        for sigma in VAL_SIGMAS:
            level = torch.full((n,), sigma, device=latents.device)
            loss = self._loss(denoiser, latents, mask, level, cond, self._fps(batch, n), noise)
            self.log(f"val/loss_sigma_{sigma:g}", loss, batch_size=n, sync_dist=True)
            losses.append(loss)
        self.log(
            "val/loss", torch.stack(losses).mean(), prog_bar=True, batch_size=n, sync_dist=True
        )

    # ---- saving (keyframe.hub: the `interpolate` kind) -------------------------------------------

    def save_pretrained(self, directory: str | os.PathLike, **options: Any) -> Path:
        """`hub.save_pretrained(self, directory, **options)`; options: see `save_interpolate`."""
        return save_interpolate(self, directory, **options)


def save_interpolate(
    model: InterpolatePipeline | InterpolateModule,
    directory: str | os.PathLike,
    fp16: bool = True,
    overwrite: bool = False,
    shared_autoencoder: str | None = None,
    int8: bool = False,
) -> Path:
    """The `interpolate` kind's saver: the keyframe stage's layout (keyframe/pretrained.py):
    `model.safetensors` (EMA network as `net.*`, text tower as `text.*`, autoencoder as
    `autoencoder.*` unless `shared_autoencoder` names the shipped keyframe model it comes from;
    fp16 if asked, int8 weight matrices if `int8`), `config.json`, and a pipeline's motion prior
    (if any) in `motion/`; atomically. A trainer saves its EMA weights and hyperparameters."""
    if isinstance(model, InterpolateModule):
        names = InterpolateModule.option_names()
        hparams = {k: v for k, v in model.hparams.items() if k in names}
        model = model.pipeline()
    else:
        hparams = model.config.to_dict()
    written = pretrained.write_pretrained(
        directory, model.model, "InterpolateModule", hparams, fp16, overwrite, shared_autoencoder,
        int8,
    )  # fmt: skip
    if model.motion_prior is not None:
        hub.save_pretrained(model.motion_prior, written / FOLDER, fp16=fp16, overwrite=overwrite)
    return written


def load_interpolate(path: Path, device: str | torch.device = "cpu") -> InterpolatePipeline:
    """The `interpolate` kind's loader: an InterpolatePipeline from a folder or a training .ckpt
    (keyframe.pretrained.load_stage); a folder's `motion/` prior is its `motion_prior` plug-in."""
    model = pretrained.load_stage(path, InterpolateModule, InterpolateModel, device)
    return InterpolatePipeline(model, model_prior(path) if path.is_dir() else None)
