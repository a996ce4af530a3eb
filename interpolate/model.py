"""The interpolation model: a plain nn.Module built from a config dataclass (no Lightning in it).

A frozen frame autoencoder, the keyframe U-Net inflated with temporal layers (VideoUNet) inside
the EDM `Denoiser`, an optional text tower: what sampling needs and what a model folder stores.
Training (interpolate.module) wraps one and keeps an EMA copy; interpolate.pipeline drives one.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from interpolate import inference
from interpolate.network import video_unet
from keyframe.autoencoder import Autoencoder
from keyframe.diffusion import Denoiser
from keyframe.model import StageConfig, StageModel
from keyframe.stage import run_text, text_encoder


@dataclass
class InterpolateConfig(StageConfig):
    """The interpolation network's options: the shared StageConfig plus the frames, temporal
    layers, text and fps conditioning, and the sampling defaults of in-betweening (window
    context, flow init); InterpolateModule says what each means."""

    num_frames: int = 16
    temporal_attention: bool = True
    temporal_heads: int = 4
    max_relative_distance: int = 16
    text_conditioning: bool = False
    fps_conditioning: bool = True
    sample_steps: int = 25
    sample_guidance: float = 1.0
    sample_fps: float = 24.0
    context_frames: int = 2
    sample_init: str = "noise"
    sample_init_sigma: float = 0.3


class InterpolateModel(StageModel):
    """Frame-conditioned video diffusion (EDM) in the latent space of a frozen autoencoder.

    `autoencoder`: the frozen autoencoder to use (a loaded model folder brings its own); None
    loads `config.autoencoder`. The sampling steps of one window are interpolate.inference's,
    bound here as methods."""

    def __init__(self, config: InterpolateConfig, autoencoder: Autoencoder | None = None):
        super().__init__(config, autoencoder)
        hp = config.to_dict()
        self.text = text_encoder(hp) if config.text_conditioning else None
        net = video_unet(hp, self.autoencoder.latent_channels, self.text)
        self.denoiser = Denoiser(net, config.sigma_data)

    def encode_text(self, prompts: Sequence[str]) -> dict[str, torch.Tensor]:
        """Cross-attention conditioning {context, context_mask, pooled}; {} without text."""
        if self.text is None:
            return {}
        tokens, pooled, mask = run_text(self.text, prompts)
        return {"context": tokens, "context_mask": mask, "pooled": pooled}

    check_frame_size = inference.check_frame_size
    encode_frames = inference.encode_frames
    decode_frames = inference.decode_frames
    sampling_conditions = inference.sampling_conditions
    sample_window = inference.sample_window
