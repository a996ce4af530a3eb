"""The keyframe stage as a LightningModule: text-conditioned image diffusion in a latent space.

Built from plain arguments (the `model:` keys of configs/keyframe/*.yaml): a frozen frame
autoencoder, a text encoder, and a U-Net inside the EDM `Denoiser`. Training uses EDM's loss with
log-normal noise levels and drops prompts to "" for classifier-free guidance; an EMA copy of the
trained weights (the U-Net, and the text tower when it trains) is what validation and `sample` use.
"""

from __future__ import annotations

import contextlib
import contextvars
import copy
import math
import warnings
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import lightning as L
import torch
from torch import nn

from keyframe import latents as latent_cache
from keyframe import layout
from keyframe.autoencoder import Autoencoder, autoencoder_record, load_autoencoder
from keyframe.consistency import anchor_list, anchored_attention, share_noise
from keyframe.diffusion import Denoiser, drop_conditioning, sample_training_sigmas
from keyframe.errors import UserError
from keyframe.files import atomic_path
from keyframe.init_weights import find_prefix, load_sub_state, read_state
from keyframe.latents import latent_batch
from keyframe.pixels import to_uint8
from keyframe.sampling import Callback, Generator, cfg_denoiser, check_sampler, randn
from keyframe.sampling import sample as run_sampler
from keyframe.text import TextEncoder
from keyframe.unet import UNet
from keyframe.vocabulary import Vocabulary, load_vocabulary, parse_vocabulary, words_of

MAX_SAMPLE_STEPS = 1000
MAX_GUIDANCE = 100.0  # scales in use are 1-20; far above, every image saturates (1e30: black)
MAX_SIZE_FACTOR = 4  # sampling sides up to 4x the training size (the cost grows as its square)
PLACE_ROUNDS = 3  # redraws at most per placed image (the best draw is kept)
VAL_SIGMAS = (0.05, 0.2, 0.5, 1.0, 2.0, 5.0)  # fixed noise levels of the validation loss
VAL_SEED = 0  # validation noise and sample grids use fixed seeds, so runs compare step to step

_prebuilt: contextvars.ContextVar[Autoencoder | None] = contextvars.ContextVar(
    "prebuilt_autoencoder", default=None
)


@contextlib.contextmanager
def prebuilt_autoencoder(autoencoder: Autoencoder) -> Iterator[None]:
    """Stage modules (KeyframeModule, InterpolateModule) built inside this block use `autoencoder`
    instead of loading their `autoencoder` argument: checkpoints carry the autoencoder's weights,
    so loading one must not depend on the file it was first read from."""
    token = _prebuilt.set(autoencoder)
    try:
        yield
    finally:
        _prebuilt.reset(token)


def stage_autoencoder(
    name: str, image_size: int, channel_mult: Sequence[int]
) -> tuple[Autoencoder, int]:
    """A stage module's frozen autoencoder (the one of `prebuilt_autoencoder`, else loaded from
    `name`) and the size images must be multiples of (its factor times the U-Net's
    downsamplings); a UserError unless `image_size` is one."""
    ae = _prebuilt.get()
    ae = load_autoencoder(name) if ae is None else ae
    ae.requires_grad_(False).eval()
    size_multiple = ae.factor * 2 ** (len(channel_mult) - 1)
    if image_size < 1 or image_size % size_multiple:
        raise UserError(
            f"model.image_size (data.size): {image_size} must be a positive multiple of "
            f"{size_multiple} (autoencoder factor {ae.factor} times the "
            f"U-Net's {len(channel_mult) - 1} downsamplings)"
        )
    return ae, size_multiple


def text_encoder(hparams: Mapping[str, Any]) -> TextEncoder:
    """The text tower a stage module's `text_*` and `train_text` hyperparameters describe."""
    return TextEncoder(
        model_name=hparams["text_model_name"],
        pretrained=hparams["text_pretrained"],
        width=hparams["text_width"],
        layers=hparams["text_layers"],
        heads=hparams["text_heads"],
        context_length=hparams["text_context_length"],
        vocab_size=hparams["text_vocab_size"],
        freeze=not hparams["train_text"],
        embed_std=hparams.get("text_embed_std"),
    )


def words_only(mask: torch.Tensor) -> torch.Tensor:
    """A context mask (b, L) bool, True from the start token to the end token, with those two
    set False: only the words remain (none for the empty prompt)."""
    mask = mask.clone()
    ends = mask.sum(dim=1) - 1
    rows = torch.arange(len(mask), device=mask.device)
    mask[rows, ends.clamp(min=0)] = False
    mask[:, 0] = False
    return mask


def check_training_options(cond_drop_rate: float, ema_decay: float) -> None:
    """UserError unless cond_drop_rate is in [0, 1] and ema_decay in [0, 1)."""
    if not 0 <= cond_drop_rate <= 1:
        raise UserError(f"model.cond_drop_rate: expected a value in [0, 1], got {cond_drop_rate}")
    if not 0 <= ema_decay < 1:
        raise UserError(f"model.ema_decay: expected a value in [0, 1), got {ema_decay}")


def adamw_with_warmup(
    params: Sequence[nn.Parameter],
    lr: float,
    weight_decay: float,
    warmup_steps: int,
    extra: Sequence[tuple[Sequence[nn.Parameter], float]] = (),
) -> dict[str, Any]:
    """Lightning's optimizer config: AdamW (no weight decay on norms and biases) with a linear
    learning-rate warm-up over `warmup_steps`, stepped every optimizer step. `extra`: more
    (parameters, lr) sets with their own learning rate."""
    groups = []
    for group, group_lr in [(params, lr), *extra]:
        groups += [
            {"params": [p for p in group if p.ndim >= 2], "weight_decay": weight_decay},
            {"params": [p for p in group if p.ndim < 2], "weight_decay": 0.0},  # norms, biases
        ]
        groups[-2]["lr"] = groups[-1]["lr"] = group_lr
    groups = [g for g in groups if g["params"]]
    optimizer = torch.optim.AdamW(groups, lr=lr, betas=(0.9, 0.999))
    warmup = max(int(warmup_steps), 0)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: min(1.0, (step + 1) / warmup) if warmup else 1.0
    )
    return {"optimizer": optimizer, "lr_scheduler": {"scheduler": schedule, "interval": "step"}}


@torch.no_grad()
def lerp_ema(pairs: Iterable[tuple[nn.Module | None, nn.Module | None]], weight: float) -> None:
    """ema <- lerp(ema, live, weight) for each (ema, live) pair with both present; buffers are
    copied."""
    for ema, live in pairs:
        if ema is None or live is None:
            continue
        torch._foreach_lerp_(
            list(ema.parameters()), [p.detach() for p in live.parameters()], weight
        )
        for ema_buffer, buffer in zip(ema.buffers(), live.buffers(), strict=True):
            ema_buffer.copy_(buffer)


def check_sampling_options(steps: Any, guidance: Any, sampler: Any) -> None:
    """UserError unless steps is an integer in 1..1000, guidance a number in 0..100, sampler
    known."""
    if isinstance(steps, bool) or not isinstance(steps, int) or not 1 <= steps <= MAX_SAMPLE_STEPS:
        raise UserError(f"steps: expected an integer from 1 to {MAX_SAMPLE_STEPS}, got {steps!r}")
    if (
        isinstance(guidance, bool)
        or not isinstance(guidance, (int, float))
        or not math.isfinite(guidance)
        or not 0 <= guidance <= MAX_GUIDANCE
    ):
        raise UserError(f"guidance: expected a number from 0 to {MAX_GUIDANCE:g}, got {guidance!r}")
    check_sampler(sampler)


def image_generators(seed: int, count: int) -> list[torch.Generator]:
    """One CPU generator per image, seeded seed, seed + 1, ...: image i depends only on seed + i,
    so one storyboard panel can be re-rolled alone and the noise is the same on every device."""
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < 2**63 - count:
        raise UserError(f"seed: expected an integer from 0 to 2**63 - 1, got {seed!r}")
    return [torch.Generator().manual_seed(seed + i) for i in range(count)]


def _prompt_list(prompts: str | Sequence[str], name: str) -> list[str]:
    prompts = [prompts] if isinstance(prompts, str) else list(prompts)
    for i, prompt in enumerate(prompts):
        if not isinstance(prompt, str):
            raise UserError(f"{name} {i}: expected text, got {type(prompt).__name__}")
    return prompts


class KeyframeModule(L.LightningModule):
    """Text-to-image diffusion (EDM) in the latent space of a frozen frame autoencoder.

    `autoencoder` is "identity" (pixel space) or anything `load_autoencoder` reads. The text
    tower is a pretrained open_clip tower (`text_model_name` + local `text_pretrained` file) or a
    small tower trained from scratch (`text_width`, `text_layers`, ...; a `text_vocab_size` below
    49408 hashes CLIP's token ids into that many rows). `ema_decay` 0 turns the EMA copy off.
    `position_bands` > 0 gives the attention blocks pixel-position features (prompts with layout).
    `pooled_drop_rate` zeroes the pooled text embedding of that share of training samples (their
    prompt then reaches the U-Net through cross-attention alone, the path that can place things).
    `cross_attend_words` hides the start and end tokens from cross-attention: the end token of a
    causal tower sums up the whole prompt, and attention that reads only it cannot place things.
    `init_from` starts fitting from another keyframe model's sampling weights (a .ckpt, a
    .safetensors file or an exported folder with the same U-Net and text settings).
    Sampling defaults: sample_*; `sample_place` places subjects by their prompt's position words
    (see `sample`). Training records the words of the captions it sees (and those of the
    `init_from` model) in its checkpoints, for the exported model's vocabulary.json
    (keyframe.vocabulary; under DDP, the words rank 0 saw).
    """

    def __init__(
        self,
        image_size: int = 64,
        autoencoder: str = "identity",
        model_channels: int = 64,
        channel_mult: Sequence[int] = (1, 2, 2),
        num_res_blocks: int = 2,
        attention_levels: Sequence[int] = (1, 2),
        num_heads: int = 4,
        dropout: float = 0.0,
        gradient_checkpointing: bool = False,
        position_bands: int = 0,
        text_model_name: str | None = None,
        text_pretrained: str | None = None,
        text_width: int = 256,
        text_layers: int = 4,
        text_heads: int = 4,
        text_context_length: int = 77,
        text_vocab_size: int = 49408,
        text_embed_std: float | None = None,
        train_text: bool = True,
        sigma_data: float = 0.5,
        p_mean: float = -1.2,
        p_std: float = 1.2,
        cond_drop_rate: float = 0.1,
        pooled_drop_rate: float = 0.0,
        cross_attend_words: bool = False,
        lr: float = 1e-4,
        weight_decay: float = 0.0,
        warmup_steps: int = 0,
        ema_decay: float = 0.999,
        sample_steps: int = 30,
        sample_guidance: float = 5.0,
        sample_sampler: str = "dpmpp_2m",
        sample_place: bool = False,
        val_prompts: Sequence[str] = (),
        init_from: str | None = None,
    ):
        super().__init__()
        self.save_hyperparameters()
        check_training_options(cond_drop_rate, ema_decay)
        if not 0.0 <= pooled_drop_rate <= 1.0:
            raise UserError(f"model.pooled_drop_rate: expected 0..1, got {pooled_drop_rate}")
        check_sampling_options(sample_steps, sample_guidance, sample_sampler)

        self.autoencoder, self.size_multiple = stage_autoencoder(
            autoencoder, image_size, channel_mult
        )
        self.text = text_encoder(self.hparams)
        channels = self.autoencoder.latent_channels
        net = UNet(
            in_channels=channels,
            out_channels=channels,
            model_channels=model_channels,
            channel_mult=list(channel_mult),
            num_res_blocks=num_res_blocks,
            attention_levels=list(attention_levels),
            num_heads=num_heads,
            context_dim=self.text.dim,
            pooled_dim=self.text.pooled_dim,
            dropout=dropout,
            checkpoint=gradient_checkpointing,
            position_bands=position_bands,
        )
        self.denoiser = Denoiser(net, sigma_data)
        use_ema = ema_decay > 0
        self.ema_net = copy.deepcopy(net).requires_grad_(False).eval() if use_ema else None
        self.ema_text = (
            copy.deepcopy(self.text).requires_grad_(False).eval()
            if use_ema and not self.text.frozen
            else None
        )
        self._initialised = False
        self.trained_words: set[str] = set()  # words of the captions trained on
        self.trained_subjects: set[str] | None = None  # subjects the init_from model recorded

    # ---- pieces other code uses ---------------------------------------------------------------

    @property
    def latent_channels(self) -> int:
        return self.autoencoder.latent_channels

    def train(self, mode: bool = True) -> KeyframeModule:
        """The frozen autoencoder and the EMA copies stay in eval mode."""
        super().train(mode)
        for frozen in (self.autoencoder, self.ema_net, self.ema_text):
            if frozen is not None:
                frozen.eval()
        return self

    def trainable_parameters(self) -> list[nn.Parameter]:
        """The U-Net's parameters, and the text tower's when it trains."""
        params = list(self.denoiser.parameters())
        if not self.text.frozen:
            params += list(self.text.parameters())
        return params

    def encode_text(self, prompts: Sequence[str], ema: bool = False) -> dict[str, torch.Tensor]:
        """U-Net conditioning for prompts: {context, context_mask, pooled}; `ema` uses the EMA
        text tower when there is one."""
        text = self.ema_text if ema and self.ema_text is not None else self.text
        with torch.set_grad_enabled(torch.is_grad_enabled() and not text.frozen and not ema):
            tokens, pooled, mask = text(list(prompts))
        if self.hparams.cross_attend_words:
            mask = words_only(mask)
        return {"context": tokens, "context_mask": mask, "pooled": pooled}

    def sampling_denoiser(self) -> Denoiser:
        """The Denoiser with the EMA U-Net (the trained one if EMA is off)."""
        if self.ema_net is None:
            return self.denoiser
        return Denoiser(self.ema_net, self.hparams.sigma_data)

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
        cond = self.encode_text(prompts)
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

    def ema_decay_at(self, step: int) -> float:
        """EMA decay with warm-up, min(ema_decay, (1 + step) / (10 + step)): early weights are
        forgotten quickly, so short runs get a usable average too."""
        return min(self.hparams.ema_decay, (1 + step) / (10 + step))

    @torch.no_grad()
    def update_ema(self) -> None:
        """ema <- lerp(ema, live, 1 - decay) for every EMA'd parameter; buffers are copied."""
        weight = 1.0 - self.ema_decay_at(self.global_step)
        lerp_ema(((self.ema_net, self.denoiser.net), (self.ema_text, self.text)), weight)

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

    def optimizer_step(self, *args: Any, **kwargs: Any) -> None:
        # Right after each optimizer step (so also under gradient accumulation), before any
        # callback runs: a checkpoint saved at this step holds the EMA of this step.
        super().optimizer_step(*args, **kwargs)
        self.update_ema()

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        # The autoencoder's architecture (its weights are in the state dict), so a checkpoint
        # loads without the file the autoencoder came from.
        checkpoint["autoencoder_config"] = autoencoder_record(self.autoencoder)
        vocabulary = self.vocabulary()
        if vocabulary is not None:
            checkpoint["vocabulary"] = vocabulary.to_json("captions trained on")

    def on_load_checkpoint(self, checkpoint: dict) -> None:
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
        denoiser = self.sampling_denoiser()
        cond = self.encode_text(batch["caption"], ema=True)
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
        if self.global_rank != 0:
            return
        prompts = list(self.hparams.val_prompts)
        images = self.sample(prompts, seed=VAL_SEED)
        grid = make_grid((images + 1) / 2, nrow=min(len(prompts), 8), padding=1, pad_value=1.0)
        logger, step = self.logger, self.global_step
        experiment = getattr(logger, "experiment", None) if logger is not None else None
        if hasattr(experiment, "add_image"):  # TensorBoard
            experiment.add_image("val/samples", grid, step)
        elif hasattr(logger, "log_image"):  # W&B and others
            logger.log_image("val/samples", [grid], step=step, caption=["; ".join(prompts)])
        elif log_dir:
            _write_png(Path(log_dir) / "samples" / f"step_{step:07d}.png", grid)

    # ---- sampling -----------------------------------------------------------------------------

    def latent_size(self, size: int | Sequence[int] | None = None) -> tuple[int, int]:
        """Latent (h, w) for an image size (int or (h, w); default image_size); a UserError
        unless both sides are positive multiples of `size_multiple`."""
        size = self.hparams.image_size if size is None else size
        h, w = (size, size) if isinstance(size, int) else tuple(size)
        m = self.size_multiple
        if min(h, w) < 1 or h % m or w % m:
            raise UserError(f"size: {h}x{w} must be positive multiples of {m} for this model")
        largest = MAX_SIZE_FACTOR * self.hparams.image_size
        if max(h, w) > largest:
            raise UserError(
                f"size: {h}x{w} is more than {MAX_SIZE_FACTOR}x the {self.hparams.image_size} px "
                f"this model was trained at (at most {largest} px a side)"
            )
        return h // self.autoencoder.factor, w // self.autoencoder.factor

    @torch.no_grad()
    def sample(
        self,
        prompts: str | Sequence[str],
        negative_prompts: str | Sequence[str] | None = None,
        steps: int | None = None,
        guidance: float | None = None,
        sampler: str | None = None,
        seed: int | None = None,
        generator: Generator = None,
        size: int | Sequence[int] | None = None,
        callback: Callback | None = None,
        anchor: int | Sequence[int] | None = None,
        noise_share: float = 0.0,
        place: bool | None = None,
    ) -> torch.Tensor:
        """Images for prompts, float `b c h w` in [-1, 1] on the CPU, with the EMA weights.

        Guidance runs cond and uncond in one batch; the uncond prompt is the negative prompt
        ("" if none). Image i uses seed + i (CPU generators, so a seed gives the same noise on
        every device); `generator` (one, or one per image) replaces the seed; with neither the
        global RNG is used. Steps, guidance and sampler default to the sample_* hyperparameters.

        `anchor` (an index, or one per image) turns on training-free consistency
        (`keyframe.consistency`): each image attends to its anchor's self-attention keys and
        values and starts from noise sharing `noise_share` of the anchor's; anchors come out as
        they would alone.

        `place` puts each subject a prompt places ("a red circle at the top left", "... and a
        blue square on the right") in that cell of a 3x3 grid (`keyframe.layout`): where an
        image's subject lands elsewhere, or is drawn twice, its patch of noise is moved (or
        drawn afresh) and the image drawn again, up to PLACE_ROUNDS times (the best draw is
        kept). Not with `anchor`; None: the sample_place hyperparameter (off when anchored).
        """
        hp = self.hparams
        prompts = _prompt_list(prompts, "prompt")
        if not prompts:
            raise UserError("prompts: expected at least one prompt")
        n = len(prompts)
        if negative_prompts is None or isinstance(negative_prompts, str):
            negatives = [negative_prompts or ""] * n
        else:
            negatives = _prompt_list(negative_prompts, "negative prompt")
            if len(negatives) != n:
                raise UserError(
                    f"negative prompts: expected {n} (one per prompt), got {len(negatives)}"
                )
        steps = hp.sample_steps if steps is None else steps
        guidance = hp.sample_guidance if guidance is None else guidance
        sampler = hp.sample_sampler if sampler is None else sampler
        check_sampling_options(steps, guidance, sampler)
        height, width = self.latent_size(size)
        if generator is None and seed is not None:
            generator = image_generators(seed, n)
        start: tuple[int, ...] | torch.Tensor = (n, self.latent_channels, height, width)
        anchors = None
        if anchor is not None:
            anchors = anchor_list(anchor, n)
        elif noise_share:
            raise UserError("noise share: needs an anchor")
        if place is None:
            place = bool(hp.sample_place) and anchors is None
        if place and anchors is not None:
            raise UserError("place: cannot be combined with an anchor (consistency) yet")

        was_training = self.training
        self.eval()
        try:
            both = self.encode_text(negatives + prompts, ema=True)
            uncond = {k: v[:n] for k, v in both.items()}
            cond = {k: v[n:] for k, v in both.items()}
            denoiser = self.sampling_denoiser()
            guided = cfg_denoiser(_float32_io(denoiser), cond, uncond, guidance)
            anchoring = contextlib.nullcontext()
            if anchors is not None:
                start = share_noise(randn(start, generator, self.device), anchors, noise_share)
                anchoring = anchored_attention(denoiser, anchors)
            if place:
                start = randn(start, generator, self.device)

            def draw(noise, index: list[int] | None = None) -> torch.Tensor:
                """Latents from noise, for the samples at `index` (all if None)."""
                gen, run = generator, guided
                if index is not None:
                    pick = {k: v[index] for k, v in cond.items()}
                    unpick = {k: v[index] for k, v in uncond.items()}
                    run = cfg_denoiser(_float32_io(denoiser), pick, unpick, guidance)
                    gen = [generator[i] for i in index] if isinstance(generator, Sequence) else gen
                with anchoring:
                    return run_sampler(
                        run, noise, steps, sampler, generator=gen, callback=callback,
                        device=self.device,
                    )  # fmt: skip

            latents = draw(start)
            if place:
                latents = self._place(draw, start, latents, prompts, generator)
            images = self.autoencoder.decode(latents)
        finally:
            self.train(was_training)
        return images.float().clamp(-1, 1).cpu()

    def _place(
        self,
        draw: Callable[..., torch.Tensor],
        noise: torch.Tensor,
        latents: torch.Tensor,
        prompts: Sequence[str],
        generator: Generator = None,
    ) -> torch.Tensor:
        """`latents` drawn from `noise`, redrawn where a prompt's placed subjects are outside
        their cells or drawn twice, from noise with their patches moved (see `sample`); each
        sample keeps its best round. `generator`: fresh noise for removed copies."""
        plans = [layout.prompt_subjects(p) for p in prompts]
        todo = [i for i, subjects in enumerate(plans) if subjects]
        if not todo:
            return latents
        best = latents.clone()
        score = dict.fromkeys(todo, float("inf"))
        current = latents[todo]  # the latents of the samples in `todo`, in its order
        for round_ in range(PLACE_ROUNDS + 1):
            images = to_uint8(self.autoencoder.decode(current))
            redo = []
            for row, (image, i) in enumerate(zip(images, todo, strict=True)):
                fit = layout.fit_subjects(plans[i], layout.subject_regions(image))
                if fit.score < score[i]:
                    score[i] = fit.score
                    best[i] = current[row]
                if fit.score > 0 and round_ < PLACE_ROUNDS:
                    own = generator[i] if isinstance(generator, Sequence) else generator
                    moved = layout.move_subjects(noise[i].cpu(), fit, own)
                    noise[i] = moved.to(noise)
                    redo.append(i)
            if not redo:
                break
            todo, current = redo, draw(noise[redo], redo)
        return best


def _float32_io(denoiser: Denoiser) -> Callable[..., torch.Tensor]:
    """The denoiser on inputs in its own dtype (e.g. fp16 weights) with float32 results, so the
    samplers always integrate in float32."""
    dtype = next(denoiser.parameters()).dtype

    def denoise(x: torch.Tensor, sigma: torch.Tensor, **cond: Any) -> torch.Tensor:
        cond = {k: v.to(dtype) if v.is_floating_point() else v for k, v in cond.items()}
        return denoiser(x.to(dtype), sigma, **cond).float()

    return denoise


def _write_png(path: Path, image: torch.Tensor) -> None:
    """A `c h w` image in [0, 1] as PNG, written atomically."""
    from PIL import Image

    array = (image.clamp(0, 1) * 255).round().byte().permute(1, 2, 0).cpu().numpy()
    with atomic_path(path) as tmp:
        Image.fromarray(array).save(tmp, format="PNG")
