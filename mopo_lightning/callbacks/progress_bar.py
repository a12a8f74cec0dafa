"""The progress bar of both stages: which stage, the epoch out of its total, no logger version.

Lightning's default bar shows ``Epoch 32/-2`` for a run without an epoch cap (stage 1 stops itself by
early stopping) and ``v_num: mics`` (the tail of the TensorBoard version name); neither tells a user
anything, and stage 1's holdout pass would draw a validation bar after every epoch. Built on the public
``TQDMProgressBar`` hooks.
"""

from __future__ import annotations

from typing import Any

import lightning as L
from lightning.pytorch.callbacks import TQDMProgressBar
from lightning.pytorch.callbacks.progress.tqdm_progress import Tqdm


class StageProgressBar(TQDMProgressBar):
    """``<stage> epoch N/M`` (``N`` alone when the stage has no epoch cap); metrics without ``v_num``."""

    def __init__(self, stage: str, refresh_rate: int = 1) -> None:
        super().__init__(refresh_rate=refresh_rate)
        self.stage = stage

    def on_train_epoch_start(self, trainer: L.Trainer, *args: Any) -> None:
        super().on_train_epoch_start(trainer, *args)
        total = f"/{trainer.max_epochs}" if trainer.max_epochs and trainer.max_epochs > 0 else ""
        self.train_progress_bar.set_description(f"{self.stage} epoch {trainer.current_epoch + 1}{total}")

    def init_validation_tqdm(self) -> Tqdm:
        """No bar for the holdout pass: one batch per epoch, its numbers are in the epoch bar and TensorBoard."""
        return Tqdm(disable=True)

    def get_metrics(self, trainer: L.Trainer, pl_module: L.LightningModule) -> dict[str, Any]:
        items = super().get_metrics(trainer, pl_module)
        items.pop("v_num", None)
        return items
