"""A Lightning callback for tests: `kill -9` of its own process after training step `step`, once
per run folder (the resumed run reads the same saved config, callback included)
(`--trainer.callbacks+=tests.killer.KillAt --trainer.callbacks.step=N`)."""

from __future__ import annotations

import os
import signal
from pathlib import Path

from lightning.pytorch.callbacks import Callback


class KillAt(Callback):
    def __init__(self, step: int):
        self.step = step

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        marker = Path(trainer.default_root_dir) / f".killed-at-{self.step}"
        if trainer.global_step >= self.step and not marker.exists():
            marker.touch()
            os.kill(os.getpid(), signal.SIGKILL)
