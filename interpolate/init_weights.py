"""Starting an interpolation model from trained weights (its `init_from`): a keyframe model's
U-Net and text tower, with the layers a keyframe model lacks left new, or every weight of another
interpolation model to fine-tune it. Plain functions that take the InterpolateModule."""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch import nn

from keyframe.errors import UserError
from keyframe.init_weights import find_prefix, load_sub_state, read_state, sub_state

if TYPE_CHECKING:
    from interpolate.module import InterpolateModule

_INTERPOLATION_PREFIXES = (  # (network, text tower) in a checkpoint or folder
    ("model.denoiser.net.", "model.text."),  # a trainer's checkpoint
    ("denoiser.net.", "text."),  # a trainer's checkpoint from before the model/trainer split
    ("net.", "text."),  # an exported folder
)


@torch.no_grad()
def load_keyframe_weights(model: InterpolateModule, path: str) -> dict[str, list[str]]:
    """Copy a keyframe model's U-Net (its EMA copy when present) and, with text conditioning,
    its text tower into `model`. Only temporal layers, the fps embedding and the extra input
    channels may be missing: the input conv's pretrained weights go to the noisy-latent channels
    and the known-latent and mask channels start at zero. Returns what was missing."""
    state = read_state(path)
    if any("temporal" in k for k in state):  # an interpolation checkpoint or exported folder
        for net_prefix, text_prefix in _INTERPOLATION_PREFIXES:
            if net_prefix + "unet.conv_in.weight" in state:
                return load_interpolation_weights(model, state, path, net_prefix, text_prefix)
    prefix = find_prefix(state, ("conv_in.weight", "time_embed.0.weight", "conv_out.weight"))
    if prefix is None:
        raise UserError(f"model.init_from: {path}: no keyframe U-Net weights found")
    unet = model.denoiser.net.unet
    weights = sub_state(state, prefix)
    if model.text is None:  # a motion model without text: leave the text layers behind
        weights = {k: v for k, v in weights.items() if not _text_layer(k)}
    conv_in = weights.pop("conv_in.weight")
    weights["conv_in.weight"] = _widened_conv_in(unet, conv_in, model.latent_channels, path)
    _check_shapes(unet, weights, path)
    result = unet.load_state_dict(weights, strict=False)
    bad = [k for k in result.missing_keys if "temporal" not in k]
    if result.unexpected_keys or bad:
        name = (result.unexpected_keys or bad)[0]
        raise UserError(
            f"model.init_from: {path}: U-Net layout differs from this model's ({name}); "
            "use the keyframe model's U-Net arguments and text settings"
        )
    if model.text is not None:
        text_prefix = find_prefix(state, ("tower.token_embedding.weight",))
        if text_prefix is not None:
            error = f"model.init_from: {path}: text tower does not fit"
            load_sub_state(model.text, state, text_prefix, error)
    model.start_ema()
    return {"missing": result.missing_keys}


def load_interpolation_weights(
    model: InterpolateModule, state: dict, path: str, net_prefix: str, text_prefix: str
) -> dict[str, list[str]]:
    """Fine-tuning: every weight from an InterpolateModule checkpoint (its live weights, not
    the lagging EMA) or exported folder (its EMA weights), so a run can continue with other
    settings (lr, mask mix, noise)."""
    parts = {net_prefix: model.denoiser.net, text_prefix: model.text}
    for prefix, target in parts.items():
        if target is None:
            continue
        error = f"model.init_from: {path}: interpolation weights do not fit"
        load_sub_state(target, state, prefix, error)
    model.start_ema()
    return {"missing": []}


def _text_layer(key: str) -> bool:
    """U-Net parameters that only exist with text conditioning (cross-attention, pooled)."""
    return key.startswith("pooled_embed.") or ".attn.cross_attn." in key or ".attn.norm2." in key


def _widened_conv_in(unet: nn.Module, conv_in: torch.Tensor, c: int, path: str) -> torch.Tensor:
    """The keyframe input conv's weights for the `c` noisy-latent channels, zeros for the
    known-latent and mask channels; a UserError unless it fits."""
    own = unet.conv_in.weight
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
    return widened


def _check_shapes(unet: nn.Module, weights: dict[str, torch.Tensor], path: str) -> None:
    """A UserError naming the first weight whose shape differs from the U-Net's."""
    own = unet.state_dict()
    mismatched = [k for k, v in weights.items() if k in own and own[k].shape != v.shape]
    if mismatched:
        raise UserError(
            f"model.init_from: {path}: {mismatched[0]} has another shape here: the U-Net "
            "arguments (model_channels, channel_mult, ...) must match the keyframe model's"
        )
