"""What both diffusion stages' trainers share: the model they train, its one EMA mechanism, and
the views of it that sampling takes.

A trainer (KeyframeModule, InterpolateModule) builds its stage model as `self.model` and calls
`start_ema()`. The EMA copies (the network, and the text tower when it trains) live in the module,
so every checkpoint holds them; they are updated right after each optimizer step (so also under
gradient accumulation, and before any callback: a checkpoint saved at a step holds that step's
EMA), with a warm-up decay. `sampling_model()` is the model on the EMA weights, shared, not copied.
"""

from __future__ import annotations

import inspect
from typing import Any

import lightning as L
import torch
from torch import nn

from keyframe.diffusion import Denoiser
from keyframe.stage import ema_copies, lerp_ema, warmup_decay

MOVED_PARTS = ("autoencoder.", "text.", "denoiser.")  # under "model." since the model/trainer split


class StageTrainer(L.LightningModule):
    """The shared part of a stage's LightningModule; subclasses add the loss and validation."""

    model: nn.Module
    CONFIG: type  # the stage's config dataclass: the network's options

    @classmethod
    def option_names(cls) -> set[str]:
        """Every option the trainer takes: its training options and its network's."""
        names = set(inspect.signature(cls).parameters) - {"network"}
        return names | cls.CONFIG.names()

    @property
    def sharded(self) -> bool:
        """Whether the weights are sharded (FSDP2: Lightning's ModelParallelStrategy), so every
        rank must run each forward pass together."""
        return self.device_mesh is not None

    def configure_model(self) -> None:
        """Under Lightning's ModelParallelStrategy (FSDP2), shard the trained network and text
        tower and their EMA copies alike over the data-parallel ranks: each rank then keeps and
        updates only its shard of the EMA, which stays exact (the update is elementwise)."""
        if not self.sharded:
            return
        from torch.distributed.fsdp import fully_shard
        from torch.distributed.tensor import DTensor

        mesh = self.device_mesh["data_parallel"]
        text = (
            self.model.text if self.model.text is not None and not self.model.text.frozen else None
        )
        for module in (self.model.denoiser.net, text, self.ema_net, self.ema_text):
            params = list(module.parameters()) if module is not None else []
            if params and not isinstance(params[0], DTensor):  # configure_model may run twice
                fully_shard(module, mesh=mesh)

    def start_ema(self) -> None:
        """(Re)start the EMA copies from the live weights (none when `ema_decay` is 0)."""
        if self.hparams.ema_decay > 0:
            self.ema_net, self.ema_text = ema_copies(self.model.denoiser.net, self.model.text)
        else:
            self.ema_net, self.ema_text = None, None

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

    def train(self, mode: bool = True) -> StageTrainer:
        """The frozen autoencoder and the EMA copies stay in eval mode."""
        super().train(mode)
        for frozen in (self.model.autoencoder, self.ema_net, self.ema_text):
            if frozen is not None:
                frozen.eval()
        return self

    def trainable_parameters(self) -> list[nn.Parameter]:
        """The network's parameters, and the text tower's when it trains."""
        params = list(self.model.denoiser.parameters())
        if self.model.text is not None and not self.model.text.frozen:
            params += list(self.model.text.parameters())
        return params

    def sampling_model(self) -> nn.Module:
        """The model with the EMA weights (the trained ones where EMA is off), sharing them."""
        if self.ema_net is None and self.ema_text is None:
            return self.model
        return type(self.model).from_parts(
            self.model.config,
            self.model.autoencoder,
            self.ema_text if self.ema_text is not None else self.model.text,
            self.ema_net if self.ema_net is not None else self.model.denoiser.net,
        )

    def sampling_denoiser(self) -> Denoiser:
        """The Denoiser with the EMA network (the trained one if EMA is off)."""
        return self.sampling_model().denoiser

    def ema_decay_at(self, step: int) -> float:
        """`ema_decay` with warm-up (keyframe.stage.warmup_decay)."""
        return warmup_decay(self.hparams.ema_decay, step)

    @torch.no_grad()
    def update_ema(self) -> None:
        """ema <- lerp(ema, live, 1 - decay) for every EMA'd parameter; buffers are copied."""
        weight = 1.0 - self.ema_decay_at(self.global_step)
        pairs = ((self.ema_net, self.model.denoiser.net), (self.ema_text, self.model.text))
        lerp_ema(pairs, weight)

    def optimizer_step(self, *args: Any, **kwargs: Any) -> None:
        # Right after each optimizer step, before any callback runs (see the module docstring).
        super().optimizer_step(*args, **kwargs)
        self.update_ema()

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        # Checkpoints written before the network moved into `model` name its parts at the top.
        state = checkpoint.get("state_dict", {})
        for key in [k for k in state if k.startswith(MOVED_PARTS)]:
            state["model." + key] = state.pop(key)
