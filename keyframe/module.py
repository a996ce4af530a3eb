"""The keyframe stage's trainer: a thin LightningModule around a KeyframeModel.

Built from plain arguments (the `model:` keys of configs/keyframe/*.yaml): the network's
(KeyframeConfig) and the training options. Training uses EDM's loss with log-normal noise levels
and drops prompts to "" for classifier-free guidance; an EMA copy of the trained weights (the
U-Net, and the text tower when it trains) is what validation samples with and what `pipeline()`
and a saved model folder hold. Inference is keyframe.pipeline's, not this module's.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from keyframe import latents as latent_cache
from keyframe.autoencoder_files import autoencoder_record
from keyframe.diffusion import drop_conditioning, sample_training_sigmas
from keyframe.errors import UserError
from keyframe.files import atomic_path
from keyframe.init_weights import find_prefix, load_sub_state, read_state
from keyframe.latents import latent_batch
from keyframe.model import KeyframeConfig, KeyframeModel
from keyframe.network import check_keyframe_options
from keyframe.pipeline import KeyframePipeline
from keyframe.placement import placement_for
from keyframe.stage import adamw_with_warmup
from keyframe.trainer import StageTrainer
from keyframe.vocabulary import Vocabulary, load_vocabulary, parse_vocabulary, words_of

VAL_SIGMAS = (0.05, 0.2, 0.5, 1.0, 2.0, 5.0)  # fixed noise levels of the validation loss
VAL_SEED = 0  # validation noise and sample grids use fixed seeds, so runs compare step to step


class KeyframeModule(StageTrainer):
    """Text-to-image diffusion (EDM) in the latent space of a frozen frame autoencoder.

    The arguments are the training options below and, as keywords, the network's options (the
    fields of keyframe.model.KeyframeConfig: one list, shared with the interpolation stage
    through StageConfig; configs and the CLI name them as before). `autoencoder` is "identity"
    (pixel space) or anything `load_autoencoder` reads. The text tower is a pretrained open_clip
    tower (`text_model_name` + local `text_pretrained` file) or a small tower trained from
    scratch (`text_width`, `text_layers`, ...; a `text_vocab_size` below 49408 hashes CLIP's
    token ids into that many rows). `ema_decay` 0 turns the EMA copy off.
    `position_bands` > 0 gives the attention blocks pixel-position features (prompts with layout).
    `pooled_drop_rate` zeroes the pooled text embedding of that share of training samples (their
    prompt then reaches the U-Net through cross-attention alone, the path that can place things).
    `cross_attend_words` hides the start and end tokens from cross-attention: the end token of a
    causal tower sums up the whole prompt, and attention that reads only it cannot place things.
    `init_from` starts fitting from another keyframe model's sampling weights (a .ckpt, a
    .safetensors file or an exported folder with the same U-Net and text settings).
    Sampling defaults: sample_*; `sample_place` gives the model the placement plug-in, on by
    default (keyframe.placement: subjects placed by their prompt's position words). Training
    records the words of the captions it sees (and those of the `init_from` model) in its
    checkpoints, for the exported model's vocabulary.json (keyframe.vocabulary; under DDP, the
    words rank 0 saw).
    """

    CONFIG = KeyframeConfig  # the network's options

    def __init__(
        self,
        p_mean: float = -1.2,
        p_std: float = 1.2,
        cond_drop_rate: float = 0.1,
        pooled_drop_rate: float = 0.0,
        lr: float = 1e-4,
        weight_decay: float = 0.0,
        warmup_steps: int = 0,
        ema_decay: float = 0.999,
        val_prompts: Sequence[str] = (),
        init_from: str | None = None,
        **network: Any,
    ):
        super().__init__()
        self.save_hyperparameters()
        try:  # the network's options: KeyframeConfig's fields (LightningCLI reads them there)
            config = KeyframeConfig(**network)
        except TypeError as err:
            raise UserError(f"model: {err}") from None
        self.hparams.update({k: v for k, v in config.to_dict().items() if k not in network})
        check_keyframe_options(self.hparams)
        self.model = KeyframeModel(config)
        self.start_ema()
        self._initialised = False
        self.trained_words: set[str] = set()  # words of the captions trained on
        self.trained_subjects: set[str] | None = None  # subjects the init_from model recorded

    # ---- sampling with the EMA weights (the rest of the EMA: keyframe.trainer) -----------------

    def pipeline(self) -> KeyframePipeline:
        """A KeyframePipeline on the EMA weights (shared, not copied) with the plug-ins the
        config asks for: how validation samples."""
        return KeyframePipeline(self.sampling_model(), placement_for(self.model.config))

    def sample(self, *args: Any, **kwargs: Any) -> torch.Tensor:
        """`self.pipeline()(...)`: see KeyframePipeline.__call__."""
        return self.pipeline()(*args, **kwargs)

    def latent_size(self, size: int | Sequence[int] | None = None) -> tuple[int, int]:
        return self.model.latent_size(size)

    # ---- training -----------------------------------------------------------------------------

    def configure_optimizers(self):
        hp = self.hparams
        return adamw_with_warmup(
            self.trainable_parameters(), hp.lr, hp.weight_decay, hp.warmup_steps
        )

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        latents = latent_batch(batch, self.autoencoder, "image")
        for caption in batch["caption"]:
            self.trained_words.update(words_of(caption))
        prompts = drop_conditioning(list(batch["caption"]), self.hparams.cond_drop_rate)
        cond = self.model.encode_text(prompts)
        if self.hparams.pooled_drop_rate > 0:
            pooled = cond["pooled"]
            keep = torch.rand(len(pooled), device=pooled.device) >= self.hparams.pooled_drop_rate
            cond["pooled"] = pooled * keep[:, None].to(pooled.dtype)
        sigma = sample_training_sigmas(
            len(latents), self.hparams.p_mean, self.hparams.p_std, device=latents.device
        )
        loss = self.denoiser.loss(latents, sigma, **cond)
        self.log("train/loss", loss, prog_bar=True, batch_size=len(latents))
        return loss

    def setup(self, stage: str) -> None:
        # Before Lightning restores a resumed checkpoint, which then replaces these weights.
        if stage == "fit" and not self._initialised:
            if self.hparams.init_from:
                self.load_initial_weights(self.hparams.init_from)
            self._initialised = True

    @torch.no_grad()
    def load_initial_weights(self, path: str) -> None:
        """The U-Net and (unless frozen) text tower of another keyframe model, its EMA copies
        when it has them; the EMA copies here start equal to the loaded weights. `path` may also
        name a shipped keyframe model ("shapes": fine-tune it on your own data)."""
        from keyframe.pretrained import resolve_model  # pretrained builds on this module

        try:
            source = resolve_model(path)
        except UserError as err:
            raise UserError(f"model.init_from: {err}") from None
        state = read_state(str(source))
        parts = [("U-Net", self.denoiser.net, ("conv_in.weight", "time_embed.0.weight"))]
        if not self.text.frozen:
            parts.append(("text tower", self.text, ("tower.token_embedding.weight",)))
        for name, target, markers in parts:
            prefix = find_prefix(state, markers)
            if prefix is None:
                raise UserError(f"model.init_from: {path}: no keyframe {name} weights found")
            error = f"model.init_from: {path}: {name} does not fit this model's settings"
            load_sub_state(target, state, prefix, error)
        for ema, live in ((self.ema_net, self.denoiser.net), (self.ema_text, self.text)):
            if ema is not None:
                ema.load_state_dict(live.state_dict())
        self._add_vocabulary(load_vocabulary(source))

    def _add_vocabulary(self, vocabulary: Vocabulary | None) -> None:
        """Words (and subjects) a model was trained on count as trained on here too."""
        if vocabulary is None:
            return
        self.trained_words |= vocabulary.words
        if vocabulary.subjects is not None:
            self.trained_subjects = (self.trained_subjects or set()) | vocabulary.subjects

    def vocabulary(self) -> Vocabulary | None:
        """The words trained on so far (None before any), as keyframe.vocabulary records them."""
        if not self.trained_words:
            return None
        subjects = self.trained_subjects
        return Vocabulary(frozenset(self.trained_words), frozenset(subjects) if subjects else None)

    def on_fit_start(self) -> None:
        # The frozen autoencoder and the EMA copies are in eval mode on purpose.
        warnings.filterwarnings("ignore", message=r"Found \d+ module\(s\) in eval mode")
        latent_cache.prepare(self, self.trainer.datamodule)

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        # The autoencoder's architecture (its weights are in the state dict), so a checkpoint
        # loads without the file the autoencoder came from.
        checkpoint["autoencoder_config"] = autoencoder_record(self.autoencoder)
        vocabulary = self.vocabulary()
        if vocabulary is not None:
            checkpoint["vocabulary"] = vocabulary.to_json("captions trained on")

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        super().on_load_checkpoint(checkpoint)
        # Resuming: the words trained on before (the run's init_from model's among them).
        record = checkpoint.get("vocabulary")
        if record is not None:
            self.trained_words, self.trained_subjects = set(), None
            self._add_vocabulary(parse_vocabulary(record, "checkpoint vocabulary"))

    # ---- validation ---------------------------------------------------------------------------

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        latents = self.autoencoder.encode(batch["image"])
        n = len(latents)
        generator = torch.Generator().manual_seed(VAL_SEED + batch_idx)
        noise = torch.randn(latents.shape, generator=generator).to(latents)
        sampling = self.sampling_model()
        denoiser = sampling.denoiser
        cond = sampling.encode_text(batch["caption"])
        losses = []
        for sigma in VAL_SIGMAS:
            level = torch.full((n,), sigma, device=latents.device)
            loss = denoiser.loss(latents, level, noise=noise, **cond)
            self.log(f"val/loss_sigma_{sigma:g}", loss, batch_size=n, sync_dist=True)
            losses.append(loss)
        self.log(
            "val/loss", torch.stack(losses).mean(), prog_bar=True, batch_size=n, sync_dist=True
        )
        if batch_idx == 0 and self.hparams.val_prompts and not self.trainer.sanity_checking:
            self._log_samples()

    def _log_samples(self) -> None:
        """Sample val_prompts (fixed seed) and log the grid: to the logger if it takes images,
        else as a PNG under the log dir."""
        from torchvision.utils import make_grid

        log_dir = self.trainer.log_dir  # a collective call: every rank must make it
        if self.global_rank != 0 and not self.sharded:
            return
        prompts = list(self.hparams.val_prompts)
        images = self.sample(prompts, seed=VAL_SEED)  # sharded weights: every rank samples
        if self.global_rank != 0:
            return
        grid = make_grid((images + 1) / 2, nrow=min(len(prompts), 8), padding=1, pad_value=1.0)
        logger, step = self.logger, self.global_step
        experiment = getattr(logger, "experiment", None) if logger is not None else None
        if hasattr(experiment, "add_image"):  # TensorBoard
            experiment.add_image("val/samples", grid, step)
        elif hasattr(logger, "log_image"):  # W&B and others
            logger.log_image("val/samples", [grid], step=step, caption=["; ".join(prompts)])
        elif log_dir:
            _write_png(Path(log_dir) / "samples" / f"step_{step:07d}.png", grid)


def _write_png(path: Path, image: torch.Tensor) -> None:
    """A `c h w` image in [0, 1] as PNG, written atomically."""
    from PIL import Image

    array = (image.clamp(0, 1) * 255).round().byte().permute(1, 2, 0).cpu().numpy()
    with atomic_path(path) as tmp:
        Image.fromarray(array).save(tmp, format="PNG")
