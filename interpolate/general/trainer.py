"""`animatic train general fit --config configs/general/cpu.yaml`: the thin LightningModule.

The target is the residual between the exact motion of a window's in-betweens and the flow init
(interpolate.general.motion): flows to both keys and the blend m = visible in left - visible in
right. The loss is EDM's (Karras et al. 2022) on that residual, plus an L1 photometric term on the
frames the denoised motion makes from the keys (weighted towards low noise, where the estimate
is sharp): the flow only has to be right where it shows. The EMA copy of the network
(`ema_denoiser`, what export takes) is the diffusion stages' one mechanism (keyframe.trainer):
held in the module, so in every checkpoint, updated right after each optimizer step.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import lightning as L
import torch

from interpolate.general.model import MotionConfig, build_denoiser
from interpolate.general.motion import (
    FLOW_UNIT,
    condition,
    init_flows,
    init_motion,
    synthesize,
)
from keyframe.diffusion import append_dims
from keyframe.stage import check_ema_decay, ema_copies, lerp_ema, warmup_decay

MAX_RESIDUAL = 8.0  # motion units: residuals beyond this (64 px) are clipped in the target


def window_inputs(batch: dict) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(conditioning, init motion, target motion residual) of a batch of windows."""
    init = init_flows(batch["f01"], batch["f10"], batch["t"])
    cond = condition(batch["k0"], batch["k1"], init, batch["t"])
    truth = batch["truth"]
    flows = (truth[:, :4] - init) / FLOW_UNIT
    blend = truth[:, 4:5] - truth[:, 5:6]
    target = torch.cat([flows.clamp(-MAX_RESIDUAL, MAX_RESIDUAL), blend], 1)
    return cond, init_motion(init), target


class GeneralModule(L.LightningModule):
    """Network options are MotionConfig's fields; training: EDM's log-normal noise levels
    (`p_mean`, `p_std`), `photo_weight` of the photometric term, AdamW at `lr`."""

    def __init__(
        self,
        patch: int = 2,
        model_channels: int = 24,
        channel_mult: Sequence[int] = (1, 2, 2),
        num_res_blocks: int = 1,
        attention_levels: Sequence[int] = (2,),
        num_heads: int = 4,
        temporal_attention: bool = False,
        working_size: int = 256,
        window: int = 16,
        steps: int = 4,
        sigma_start: float = 2.0,
        sigma_data: float = 0.5,
        p_mean: float = -0.8,
        p_std: float = 1.2,
        photo_weight: float = 1.0,
        lr: float = 3e-4,
        weight_decay: float = 0.0,
        warmup_steps: int = 200,
        ema_decay: float = 0.999,
    ):
        super().__init__()
        self.save_hyperparameters()
        self.config = MotionConfig(
            patch=patch,
            model_channels=model_channels, channel_mult=list(channel_mult),
            num_res_blocks=num_res_blocks, attention_levels=list(attention_levels),
            num_heads=num_heads, temporal_attention=temporal_attention, sigma_data=sigma_data,
            working_size=working_size, window=window, steps=steps, sigma_start=sigma_start,
        )  # fmt: skip
        self.denoiser = build_denoiser(self.config)
        check_ema_decay(ema_decay)
        self.ema_denoiser = ema_copies(self.denoiser, None)[0] if ema_decay > 0 else None

    def train(self, mode: bool = True) -> GeneralModule:
        """The EMA copy stays in eval mode."""
        super().train(mode)
        if self.ema_denoiser is not None:
            self.ema_denoiser.eval()
        return self

    def optimizer_step(self, *args: Any, **kwargs: Any) -> None:
        # As keyframe.trainer's: right after each optimizer step, before any callback runs.
        super().optimizer_step(*args, **kwargs)
        weight = 1.0 - warmup_decay(self.hparams.ema_decay, self.global_step)
        lerp_ema([(self.ema_denoiser, self.denoiser)], weight)

    def configure_optimizers(self):
        opt = torch.optim.AdamW(
            self.denoiser.parameters(), lr=self.hparams.lr, weight_decay=self.hparams.weight_decay
        )
        warmup = max(1, self.hparams.warmup_steps)
        schedule = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / warmup))
        return {"optimizer": opt, "lr_scheduler": {"scheduler": schedule, "interval": "step"}}

    def losses(self, batch: dict) -> dict[str, torch.Tensor]:
        cond, start, target = window_inputs(batch)
        b = target.shape[0]
        sigma = torch.randn(b, device=target.device) * self.hparams.p_std + self.hparams.p_mean
        sigma = sigma.exp()
        noisy = target + append_dims(sigma, target.ndim) * torch.randn_like(target)
        denoised = self.denoiser(noisy, sigma, cond=cond)
        sd2 = self.hparams.sigma_data**2
        weight = append_dims((sigma**2 + sd2) / (sigma * self.hparams.sigma_data) ** 2, 5)
        valid = batch["valid"][:, None, :, None, None]
        frames = valid.sum() * target.shape[-1] * target.shape[-2]
        edm = (weight * (denoised - target) ** 2 * valid).sum() / (frames * target.shape[1])
        made = synthesize(batch["k0"], batch["k1"], start + denoised, batch["t"])
        sharp = append_dims(sd2 / (sigma**2 + sd2), 5)
        photo = (sharp * (made - batch["frames"]).abs() * valid).sum() / (frames * 3)
        return {"edm": edm, "photo": photo, "loss": edm + self.hparams.photo_weight * photo}

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        losses = self.losses(batch)
        self.log_dict({f"train/{k}": v for k, v in losses.items()}, prog_bar=True)
        return losses["loss"]
