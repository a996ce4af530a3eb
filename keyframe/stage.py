"""Building blocks both stages are made of: the frozen autoencoder, the text tower (and running
it), and their trainers' EMA copies, training checks and optimizer."""

from __future__ import annotations

import copy
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import torch
from torch import nn

from keyframe.autoencoder import Autoencoder
from keyframe.autoencoder_files import load_autoencoder
from keyframe.errors import UserError
from keyframe.text import TextEncoder


def stage_autoencoder(
    name: str, image_size: int, channel_mult: Sequence[int], given: Autoencoder | None = None
) -> tuple[Autoencoder, int]:
    """A stage's frozen autoencoder (`given`, else loaded from `name`) and the size images must
    be multiples of (its factor times the U-Net's downsamplings); a UserError unless
    `image_size` is one."""
    ae = load_autoencoder(name) if given is None else given
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


def ema_copies(net: nn.Module, text: TextEncoder | None) -> tuple[nn.Module, TextEncoder | None]:
    """Frozen eval-mode copies of the network and, when it trains, the text tower: the EMA
    weights that validation and sampling use."""
    ema_net = copy.deepcopy(net).requires_grad_(False).eval()
    if text is None or text.frozen:
        return ema_net, None
    return ema_net, copy.deepcopy(text).requires_grad_(False).eval()


def check_training_options(cond_drop_rate: float, ema_decay: float) -> None:
    """UserError unless cond_drop_rate is in [0, 1] and ema_decay in [0, 1)."""
    if not 0 <= cond_drop_rate <= 1:
        raise UserError(f"model.cond_drop_rate: expected a value in [0, 1], got {cond_drop_rate}")
    check_ema_decay(ema_decay)


def check_ema_decay(ema_decay: float) -> None:
    """UserError unless ema_decay is in [0, 1) (0: no EMA copy)."""
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


def warmup_decay(decay: float, step: int) -> float:
    """EMA decay with warm-up, min(decay, (1 + step) / (10 + step)): early weights are forgotten
    quickly, so short runs get a usable average too."""
    return min(decay, (1 + step) / (10 + step))


@torch.no_grad()
def lerp_ema(pairs: Iterable[tuple[nn.Module | None, nn.Module | None]], weight: float) -> None:
    """ema <- lerp(ema, live, weight) for each (ema, live) pair with both present; buffers are
    copied."""
    for ema, live in pairs:
        if ema is None or live is None:
            continue
        for module in (ema, live):  # FSDP2: a root keeps its weights gathered after forward
            if hasattr(module, "reshard"):
                module.reshard()
        torch._foreach_lerp_(
            list(ema.parameters()), [p.detach() for p in live.parameters()], weight
        )
        for ema_buffer, buffer in zip(ema.buffers(), live.buffers(), strict=True):
            ema_buffer.copy_(buffer)


def run_text(text: TextEncoder, prompts: Sequence[str]) -> tuple[torch.Tensor, ...]:
    """(tokens, pooled, mask) of `text` for prompts, with gradients only where the tower trains
    (not frozen, not an EMA copy or a loaded model, whose weights need no gradient)."""
    frozen = text.frozen or not any(p.requires_grad for p in text.parameters())
    with torch.set_grad_enabled(torch.is_grad_enabled() and not frozen):
        return text(list(prompts))
