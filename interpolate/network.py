"""The interpolation network from the InterpolateModule's hyperparameters: the checks they must
pass, and the keyframe U-Net inflated with temporal layers (VideoUNet) that they describe."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from interpolate.flow import check_init
from interpolate.masks import check_weights
from interpolate.temporal import VideoUNet
from keyframe.errors import UserError
from keyframe.network import unet_arguments
from keyframe.sampling_options import check_sampling_options
from keyframe.stage import check_training_options
from keyframe.text import TextEncoder


def check_interpolate_options(hparams: Mapping[str, Any]) -> dict[str, float]:
    """The mixture of training masks (interpolate.masks.check_weights); a UserError unless the
    other training and sampling hyperparameters are in range."""
    mask_weights = check_weights(hparams["mask_weights"])
    min_frames, num_frames = hparams["min_frames"], hparams["num_frames"]
    if not 2 <= min_frames <= num_frames:
        raise UserError(
            f"model.min_frames: expected 2..num_frames ({num_frames}), got {min_frames}"
        )
    check_training_options(hparams["cond_drop_rate"], hparams["ema_decay"])
    sample_fps = hparams["sample_fps"]
    if not sample_fps > 0:
        raise UserError(f"model.sample_fps: expected a positive frame rate, got {sample_fps}")
    check_sampling_options(
        hparams["sample_steps"], hparams["sample_guidance"], hparams["sample_sampler"]
    )
    check_init(hparams["sample_init"], hparams["sample_init_sigma"])
    return mask_weights


def video_unet(
    hparams: Mapping[str, Any], latent_channels: int, text: TextEncoder | None
) -> VideoUNet:
    """The keyframe U-Net the hyperparameters describe, inflated with temporal layers; text
    conditioning from `text` if given."""
    return VideoUNet(
        latent_channels=latent_channels,
        **unet_arguments(hparams, text),
        temporal_attention=hparams["temporal_attention"],
        temporal_heads=hparams["temporal_heads"],
        max_relative_distance=hparams["max_relative_distance"],
        fps_conditioning=hparams["fps_conditioning"],
    )
