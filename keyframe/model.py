"""The keyframe model: a plain nn.Module built from a config dataclass (no Lightning in it).

A frozen frame autoencoder, a text tower and a text-conditioned U-Net inside the EDM `Denoiser`:
what sampling needs and what a model folder stores. Training (keyframe.module) wraps one and
keeps an EMA copy; sampling (keyframe.pipeline) drives one.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any

import torch
from torch import nn

from keyframe.autoencoder import Autoencoder
from keyframe.diffusion import Denoiser
from keyframe.errors import UserError
from keyframe.network import keyframe_unet
from keyframe.stage import run_text, stage_autoencoder, text_encoder
from keyframe.text import TextEncoder

MAX_SIZE_FACTOR = 4  # sampling sides up to 4x the training size (the cost grows as its square)


@dataclass
class StageConfig:
    """The options both diffusion stages' networks share (one list, not two copies): size,
    autoencoder, U-Net, text tower, EDM's sigma_data and the sampling defaults (`sample_*`: the
    one default of steps, guidance and sampler). Stage configs add their own."""

    image_size: int = 64
    autoencoder: str = "identity"
    model_channels: int = 64
    channel_mult: list[int] = field(default_factory=lambda: [1, 2, 2])
    num_res_blocks: int = 2
    attention_levels: list[int] = field(default_factory=lambda: [1, 2])
    num_heads: int = 4
    dropout: float = 0.0
    gradient_checkpointing: bool = False
    position_bands: int = 0
    text_model_name: str | None = None
    text_pretrained: str | None = None
    text_width: int = 256
    text_layers: int = 4
    text_heads: int = 4
    text_context_length: int = 77
    text_vocab_size: int = 49408
    train_text: bool = True
    sigma_data: float = 0.5
    sample_steps: int = 30
    sample_guidance: float = 5.0
    sample_sampler: str = "dpmpp_2m"

    @classmethod
    def names(cls) -> set[str]:
        return {f.name for f in fields(cls)}

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]):
        """The config of these values; keys that are not fields (training options) are ignored."""
        known = {k: v for k, v in values.items() if k in cls.names()}
        for key in ("channel_mult", "attention_levels"):
            if key in known:
                known[key] = list(known[key])
        return cls(**known)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def replace(self, **changes: Any):
        return replace(self, **changes)


@dataclass
class KeyframeConfig(StageConfig):
    """The keyframe network's options (the `model:` keys of configs/keyframe/*.yaml that are
    not training options; KeyframeModule says what each means) and `sample_place`, whether the
    placement plug-in runs by default."""

    text_embed_std: float | None = None
    cross_attend_words: bool = False
    sample_place: bool = False


def words_only(mask: torch.Tensor) -> torch.Tensor:
    """A context mask (b, L) bool, True from the start token to the end token, with those two
    set False: only the words remain (none for the empty prompt)."""
    mask = mask.clone()
    ends = mask.sum(dim=1) - 1
    rows = torch.arange(len(mask), device=mask.device)
    mask[rows, ends.clamp(min=0)] = False
    mask[:, 0] = False
    return mask


class StageModel(nn.Module):
    """What both stages' models share: `config`, a frozen `autoencoder`, a `text` tower (or None)
    and the `denoiser`; building one from existing parts (a trainer's EMA weights)."""

    config: StageConfig
    autoencoder: Autoencoder
    text: TextEncoder | None
    denoiser: Denoiser
    size_multiple: int

    def __init__(self, config: StageConfig, autoencoder: Autoencoder | None = None):
        """The config and the frozen autoencoder (`autoencoder`, else loaded from
        `config.autoencoder`); a subclass adds its text tower and denoiser."""
        super().__init__()
        self.config = config
        self.autoencoder, self.size_multiple = stage_autoencoder(
            config.autoencoder, config.image_size, config.channel_mult, autoencoder
        )

    @classmethod
    def from_parts(
        cls, config: StageConfig, autoencoder: Autoencoder, text, net: nn.Module
    ) -> StageModel:
        """A model made of existing parts (no copy): a trainer's EMA weights as a model."""
        model = cls.__new__(cls)
        StageModel.__init__(model, config, autoencoder)
        model.text, model.denoiser = text, Denoiser(net, config.sigma_data)
        return model

    @property
    def latent_channels(self) -> int:
        return self.autoencoder.latent_channels

    @property
    def device(self) -> torch.device:
        return next(self.denoiser.parameters()).device

    def train(self, mode: bool = True) -> StageModel:
        """The frozen autoencoder stays in eval mode."""
        super().train(mode)
        self.autoencoder.eval()
        return self


class KeyframeModel(StageModel):
    """Text-to-image diffusion (EDM) in the latent space of a frozen frame autoencoder.

    `autoencoder`: the frozen autoencoder to use (a loaded model folder brings its own); None
    loads `config.autoencoder` ("identity": pixel space)."""

    def __init__(self, config: KeyframeConfig, autoencoder: Autoencoder | None = None):
        super().__init__(config, autoencoder)
        hp = config.to_dict()
        self.text = text_encoder(hp)
        self.denoiser = Denoiser(
            keyframe_unet(hp, self.autoencoder.latent_channels, self.text), config.sigma_data
        )

    def encode_text(self, prompts: Sequence[str]) -> dict[str, torch.Tensor]:
        """U-Net conditioning for prompts: {context, context_mask, pooled}."""
        tokens, pooled, mask = run_text(self.text, prompts)
        if self.config.cross_attend_words:
            mask = words_only(mask)
        return {"context": tokens, "context_mask": mask, "pooled": pooled}

    def latent_size(self, size: int | Sequence[int] | None = None) -> tuple[int, int]:
        """Latent (h, w) for an image size (int or (h, w); default image_size); a UserError
        unless both sides are positive multiples of `size_multiple` and at most
        MAX_SIZE_FACTOR times the training size."""
        trained = self.config.image_size
        size = trained if size is None else size
        h, w = (size, size) if isinstance(size, int) else tuple(size)
        m = self.size_multiple
        if min(h, w) < 1 or h % m or w % m:
            raise UserError(f"size: {h}x{w} must be positive multiples of {m} for this model")
        largest = MAX_SIZE_FACTOR * trained
        if max(h, w) > largest:
            raise UserError(
                f"size: {h}x{w} is more than {MAX_SIZE_FACTOR}x the {trained} px "
                f"this model was trained at (at most {largest} px a side)"
            )
        return h // self.autoencoder.factor, w // self.autoencoder.factor
