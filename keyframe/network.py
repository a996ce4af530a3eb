"""The keyframe network from the KeyframeModule's hyperparameters: the checks they must pass, and
the text-conditioned U-Net they describe."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from keyframe.errors import UserError
from keyframe.sampling_options import check_sampling_options
from keyframe.stage import check_training_options
from keyframe.text import TextEncoder
from keyframe.unet import UNet


def check_keyframe_options(hparams: Mapping[str, Any]) -> None:
    """UserError unless the training and sampling hyperparameters are in range."""
    check_training_options(hparams["cond_drop_rate"], hparams["ema_decay"])
    pooled_drop_rate = hparams["pooled_drop_rate"]
    if not 0.0 <= pooled_drop_rate <= 1.0:
        raise UserError(f"model.pooled_drop_rate: expected 0..1, got {pooled_drop_rate}")
    check_sampling_options(
        hparams["sample_steps"], hparams["sample_guidance"], hparams["sample_sampler"]
    )


def keyframe_unet(hparams: Mapping[str, Any], latent_channels: int, text: TextEncoder) -> UNet:
    """The U-Net the hyperparameters describe, conditioned on `text`'s tokens and pooled
    embedding, on `latent_channels` latents in and out."""
    return UNet(
        in_channels=latent_channels, out_channels=latent_channels, **unet_arguments(hparams, text)
    )


def unet_arguments(hparams: Mapping[str, Any], text: TextEncoder | None) -> dict[str, Any]:
    """The U-Net arguments both stages read from the same hyperparameters (the interpolator's
    video U-Net is the keyframe U-Net inflated), text conditioning from `text` if given."""
    return {
        "model_channels": hparams["model_channels"],
        "channel_mult": list(hparams["channel_mult"]),
        "num_res_blocks": hparams["num_res_blocks"],
        "attention_levels": list(hparams["attention_levels"]),
        "num_heads": hparams["num_heads"],
        "context_dim": text.dim if text is not None else None,
        "pooled_dim": text.pooled_dim if text is not None else None,
        "dropout": hparams["dropout"],
        "checkpoint": hparams["gradient_checkpointing"],
        "position_bands": hparams["position_bands"],
    }
