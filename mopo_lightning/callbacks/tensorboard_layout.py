"""TensorBoard's "is it learning" charts: the score, the model's holdout error, the penalty, side by side.

A run's TensorBoard has ~50 tags over two runs (``<run>/tensorboard/dynamics`` and ``.../sac``); its Time Series
tab, the one TensorBoard opens on, sorts their groups alphabetically (``dynamics`` first) and shows them all.
This callback writes a custom-scalars layout (``SummaryWriter.add_custom_scalars``, TensorBoard's public way to
choose charts) whose one category holds the three curves that answer "is it learning": the evaluation's D4RL
score (the return for tasks without reference scores), the elites' holdout MSE from stage 1, and the mean
uncertainty penalty of the model rollouts. TensorBoard merges the layouts of every run under its logdir, so the
SAC run's layout also names stage 1's tag. Open it with ``tensorboard --logdir <run>/tensorboard`` and the
CUSTOM SCALARS tab (``http://localhost:6006/#custom_scalars``).
"""

from __future__ import annotations

from typing import Any

import lightning as L
from lightning.pytorch.loggers import TensorBoardLogger

from mopo_lightning.envs.tasks import Task, get_task
from mopo_lightning.machine import is_rank_zero

CATEGORY = "is it learning"
"""The layout's one category (TensorBoard merges categories of the same title across runs)."""

SCORE, RETURN = "eval/normalized_score", "eval/return_mean"
HOLDOUT_MSE = "dynamics/holdout_mse/elites"
PENALTY = "rollout/penalty_mean"


def headline_layout(scored: bool = True) -> dict[str, dict[str, list[Any]]]:
    """``{category: {chart title: ["Multiline", [tag regex]]}}`` as ``add_custom_scalars`` takes it: the score
    (``eval/return_mean`` when ``scored`` is False: no reference scores), the holdout MSE, the penalty."""
    score = (f"score ({SCORE})", SCORE) if scored else (f"return ({RETURN})", RETURN)
    charts = [score, (f"model error ({HOLDOUT_MSE})", HOLDOUT_MSE), (f"penalty ({PENALTY})", PENALTY)]
    return {CATEGORY: {title: ["Multiline", [f"^{tag}$"]] for title, tag in charts}}


class TensorBoardLayout(L.Callback):
    """At fit start, write ``headline_layout`` into every ``TensorBoardLogger`` of the Trainer (rank zero).

    Args:
        task: the evaluated task (a name or the data's own ``Task``): its reference scores decide whether the
            first chart is the D4RL score or the return, as ``MuJoCoEvaluation`` logs one or the other.
    """

    def __init__(self, task: str | Task) -> None:
        super().__init__()
        self.scored = (task if isinstance(task, Task) else get_task(task)).has_reference_scores

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not is_rank_zero(trainer):
            return
        for logger in trainer.loggers:
            if isinstance(logger, TensorBoardLogger):  # a resume writes it again: TensorBoard reads one
                logger.experiment.add_custom_scalars(headline_layout(self.scored))
