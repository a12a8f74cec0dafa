"""The progress bar of both stages: which stage, the epoch out of its total, no logger version.

Lightning's default bar shows ``Epoch 32/-2`` for a run without an epoch cap (stage 1 stops itself by
early stopping) and ``v_num: mics`` (the tail of the TensorBoard version name); neither tells a user
anything, and stage 1's holdout pass would draw a validation bar after every epoch. Built on the public
``TQDMProgressBar`` hooks; the bars are plain ``tqdm`` bars (Lightning's own ``Tqdm`` only pads numbers).
"""

from __future__ import annotations

import math
import sys
from typing import Any

import lightning as L
from lightning.pytorch.callbacks import TQDMProgressBar
from tqdm import tqdm


class StageProgressBar(TQDMProgressBar):
    """``<stage> epoch N/M`` (``N`` alone when the stage has no epoch cap); metrics without ``v_num``."""

    def __init__(self, stage: str, refresh_rate: int = 1) -> None:
        super().__init__(refresh_rate=refresh_rate)
        self.stage = stage

    @property
    def train_description(self) -> str:
        return self.stage

    def init_train_tqdm(self) -> tqdm:
        """Lightning's training bar, first drawn when the epoch starts (labelled), not when made (``0/?``)."""
        return tqdm(desc=self.train_description, position=2 * self.process_position, disable=self.is_disabled,
                    leave=True, dynamic_ncols=True, file=sys.stdout, smoothing=0, bar_format=self.BAR_FORMAT,
                    delay=1e-9)  # any delay > 0: tqdm skips the draw at construction

    def on_train_epoch_start(self, trainer: L.Trainer, *args: Any) -> None:
        """Lightning's own hook redraws the bar three times (old label, ``Epoch N``, then ours): a log file
        that is not a terminal keeps every redraw. One redraw here, already labelled."""
        total = f"/{trainer.max_epochs}" if trainer.max_epochs and trainer.max_epochs > 0 else ""
        bar = self.train_progress_bar
        bar.set_description(f"{self.stage} epoch {trainer.current_epoch + 1}{total}", refresh=False)
        bar.initial = 0
        total = self.total_train_batches  # inf for an iterable without a length: tqdm wants None
        bar.reset(total=total if total is not None and math.isfinite(total) else None)

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        """One redraw per refresh (Lightning's hook draws the count, then again the metrics)."""
        n, bar = batch_idx + 1, self.train_progress_bar
        if bar.disable or not self.refresh_rate:
            return
        if n == bar.total:  # drawn once, by ``on_train_epoch_end``, with the epoch's final metrics
            bar.n = n
        elif n % self.refresh_rate == 0:
            bar.n = n
            bar.set_postfix(self.get_metrics(trainer, pl_module))

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        """Lightning's hook redraws the finished epoch's bar; here the holdout's metrics are only stored."""
        self.val_progress_bar.close()
        self.reset_dataloader_idx_tracker()
        if trainer.state.fn == "fit" and not trainer.sanity_checking and not self.train_progress_bar.disable:
            self.train_progress_bar.set_postfix(self.get_metrics(trainer, pl_module), refresh=False)

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        """The epoch's one draw at its end, with its final metrics; the last epoch's is left to the bar's ``close``
        at the end of training, which draws it anyway. (The bar is never built with ``leave``.)"""
        bar = self.train_progress_bar
        if bar.disable:
            return
        capped = trainer.max_epochs is not None and 0 < trainer.max_epochs <= trainer.current_epoch + 1
        bar.set_postfix(self.get_metrics(trainer, pl_module), refresh=not (trainer.should_stop or capped))

    def init_validation_tqdm(self) -> tqdm:
        """No bar for the holdout pass: one batch per epoch, its numbers are in the epoch bar and TensorBoard."""
        return tqdm(disable=True)

    def get_metrics(self, trainer: L.Trainer, pl_module: L.LightningModule) -> dict[str, Any]:
        """Without ``v_num``; whole-number floats (the SAC update count) as ints: tqdm writes 2000.0 as ``2e+3``."""
        items = super().get_metrics(trainer, pl_module)
        items.pop("v_num", None)
        return {k: int(v) if isinstance(v, float) and v.is_integer() else v for k, v in items.items()}
