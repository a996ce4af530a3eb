"""The interpolation stage's trainer: a thin LightningModule around an InterpolateModel.

Built from plain arguments (the `model:` keys of configs/interpolate/*.yaml): the network's
(InterpolateConfig) and the training options. Each training clip gets a random mask of known
frames (`interpolate.masks`); the EDM loss counts the unknown frames only. An EMA copy of the
trained weights is what validation, `pipeline()` and a saved folder use. `init_from` starts the
spatial layers from a trained keyframe model (interpolate.init_weights). Inference is
interpolate.pipeline's; the `interpolate` kind's saver and loader are at the end.
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

from interpolate import init_weights
from interpolate.masks import draw_mask
from interpolate.model import InterpolateConfig, InterpolateModel
from interpolate.motion import FOLDER, model_prior
from interpolate.network import check_interpolate_options
from interpolate.pipeline import InterpolatePipeline
from keyframe import hub, pretrained
from keyframe import latents as latent_cache
from keyframe.autoencoder_files import autoencoder_record
from keyframe.diffusion import Denoiser, drop_conditioning, sample_training_sigmas
from keyframe.latents import latent_batch
from keyframe.stage import adamw_with_warmup, ema_copies, lerp_ema

VAL_SIGMAS = (0.05, 0.2, 0.5, 1.0, 2.0, 5.0)  # fixed noise levels of the validation loss
VAL_SEED = 0
SHIPPED_DIR = Path(__file__).resolve().parent / "weights"
_MOVED_PARTS = ("autoencoder.", "text.", "denoiser.")  # under "model." since the model split


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
    with a `motion/` prior (interpolate.motion) hands it to its pipeline as `motion_prior`.
    """

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
        self.model = InterpolateModel(InterpolateConfig.from_dict(self.hparams))
        net, text = self.model.denoiser.net, self.model.text
        self.ema_net, self.ema_text = ema_copies(net, text) if ema_decay > 0 else (None, None)
        self._initialised = init_from is None

    # ---- pieces other code uses ---------------------------------------------------------------

    @property
    def autoencoder(self):
        return self.model.autoencoder

    @property
    def text(self):
        return self.model.text

    @property
    def denoiser(self) -> Denoiser:
        return self.model.denoiser

    @property
    def latent_channels(self) -> int:
        return self.model.latent_channels

    @property
    def size_multiple(self) -> int:
        return self.model.size_multiple

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

    def sampling_model(self) -> InterpolateModel:
        """The model with the EMA weights (the trained ones where EMA is off), sharing them."""
        if self.ema_net is None and self.ema_text is None:
            return self.model
        return InterpolateModel.from_parts(
            self.model.config,
            self.model.autoencoder,
            self.ema_text if self.ema_text is not None else self.model.text,
            self.ema_net if self.ema_net is not None else self.model.denoiser.net,
        )

    def sampling_denoiser(self) -> Denoiser:
        """The Denoiser with the EMA network (the trained one if EMA is off)."""
        return self.sampling_model().denoiser

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

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        # Checkpoints written before the network moved into `model` name its parts at the top.
        state = checkpoint.get("state_dict", {})
        for key in [k for k in state if k.startswith(_MOVED_PARTS)]:
            state["model." + key] = state.pop(key)

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
        names = inspect.signature(InterpolateModule).parameters
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
    model = pretrained.load_stage(
        path, InterpolateModule, InterpolateConfig, InterpolateModel, device
    )
    return InterpolatePipeline(model, model_prior(path) if path.is_dir() else None)
