"""``results.json``: the run's headline numbers, rewritten after every evaluation.

Written atomically (temporary file, then rename), so a crash never leaves a half-written file, and a
reader (``mopo-lightning report``, a notebook) always sees the latest complete state.
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Any

import lightning as L
from lightning.pytorch.loggers import TensorBoardLogger

from mopo_lightning.callbacks.evaluation import MuJoCoEvaluation
from mopo_lightning.files import write_text_atomic

HP_METRIC = "hp/final_normalized_score"
RUNNING, FINISHED, FAILED, STOPPED = STATUSES = ("running", "finished", "failed", "stopped")
"""``results.json`` ``status``: still running (or killed without a word: SIGKILL, power loss), finished its
planned budget, failed (an exception: ``status_detail.error``), or stopped early (``status_detail``: the
``signal``, or the ``reason`` the trainer ended before its budget)."""


def _strict(value: Any) -> Any:
    """NaN and inf become null: strict JSON readers reject them."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _strict(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_strict(v) for v in value]
    return value


def write_json_atomic(path: str | Path, data: dict[str, Any]) -> None:
    """Write strict JSON through a temporary file in the same directory, then rename it into place."""
    write_text_atomic(path, json.dumps(_strict(data), indent=2, sort_keys=False, allow_nan=False) + "\n")


class RunResults(L.Callback):
    """Keeps ``<run_dir>/results.json`` up to date with every MuJoCo evaluation.

    Fields: ``task``, ``dataset``, ``seed``, ``method`` (``fit --method``, a sweep's arm), ``status`` and
    ``status_detail`` (``STATUSES``), ``planned`` (the budget: epochs, SAC updates, evaluations), ``dynamics`` (holdout MSE of the elites, elites, epochs,
    seconds), ``evaluations`` (list of {``sac_updates``, ``return_mean``, ``normalized_score``}),
    ``final_normalized_score`` and ``final_return`` (the latest evaluation; the score is null for
    variants without D4RL reference scores) and ``seconds`` per stage. With ``callbacks.premise`` on, each
    evaluation also holds ``premise`` (its ``premise/`` figures without the prefix, and ``penalty_kind``)
    and ``final_premise`` repeats the latest one. ``penalty``: the penalty kind, lambda, its units and the
    lambda applied to the raw penalty (``dynamics.penalty_scales``: every kind's scale on the data).
    """

    def __init__(self, path: str | Path, header: dict[str, Any]) -> None:
        super().__init__()
        self.path = Path(path)
        self.data: dict[str, Any] = {
            **header,
            "status": RUNNING,
            "evaluations": [],
            "final_normalized_score": None,
            "seconds": dict(header.get("seconds", {})),
        }
        self._start: float | None = None
        self._offset = 0.0
        self.rank_zero = True
        """Only the first process writes the file (DDP runs every callback on every rank)."""
        self.evaluation: MuJoCoEvaluation | None = None
        """The evaluation whose history this records (handed in by the recipe)."""
        self.tensorboard_hparams: dict[str, Any] = {}
        """The run's defining knobs for TensorBoard's hparams view, scored by the final normalised score."""

    def restore(self) -> None:
        """A resumed run keeps what it recorded (evaluations past the restored checkpoint are dropped in
        ``on_train_start``). A fresh start, ``--overwrite`` included, never reads the old file."""
        if self.path.exists():
            previous = json.loads(self.path.read_text())
            self.data["evaluations"] = previous.get("evaluations", [])
            self.data["seconds"]["policy"] = previous.get("seconds", {}).get("policy", 0.0)

    def set_status(self, status: str, **details: Any) -> None:
        """Record how the run stands (``STATUSES``) with its details (signal, error, reason) and save."""
        assert status in STATUSES, status
        self.data["status"] = status
        self.data.pop("status_detail", None)
        if details:
            self.data["status_detail"] = details
        self.save()

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._start = time.perf_counter()
        self.rank_zero = trainer.is_global_zero
        # Evaluations past the restored checkpoint are dropped: the resumed run will redo them.
        done = int(getattr(pl_module, "sac_updates", 0))
        self.data["evaluations"] = [e for e in self.data["evaluations"] if e["sac_updates"] <= done]
        self._offset = float(self.data["seconds"].get("policy", 0.0)) if done else 0.0
        evals = self.data["evaluations"]
        self.data["final_normalized_score"] = evals[-1]["normalized_score"] if evals else None
        self.data["final_return"] = evals[-1]["return_mean"] if evals else None
        self.data["final_premise"] = evals[-1].get("premise") if evals else None
        logger = trainer.logger
        if isinstance(logger, TensorBoardLogger) and self.tensorboard_hparams:
            score = self.data["final_normalized_score"]
            logger.log_hyperparams(self.tensorboard_hparams,
                                   metrics={HP_METRIC: float("nan") if score is None else score})

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        evaluation = self.evaluation
        if evaluation is None or not evaluation.history:
            return
        latest = evaluation.history[-1]
        if self.data["evaluations"] and self.data["evaluations"][-1]["sac_updates"] == latest["sac_updates"]:
            return  # no new evaluation this epoch
        score = latest["eval/normalized_score"]
        score = None if score is None or not math.isfinite(score) else score  # variants: no D4RL score
        self.data["evaluations"].append(
            {
                "sac_updates": latest["sac_updates"],
                "return_mean": latest["eval/return_mean"],
                "return_std": latest["eval/return_std"],
                "normalized_score": score,
                **({"premise": latest["premise"]} if "premise" in latest else {}),
            }
        )
        self.data["final_premise"] = latest.get("premise")
        self.data["final_normalized_score"] = score
        self.data["final_return"] = latest["eval/return_mean"]
        if trainer.logger is not None and score is not None:
            trainer.logger.log_metrics({HP_METRIC: score}, step=latest["sac_updates"])
        self.save()

    def save(self) -> None:
        """Rewrite the file (rank 0 only); the policy-stage clock is updated first."""
        if self._start is not None:
            self.data["seconds"]["policy"] = self._offset + time.perf_counter() - self._start
        if self.rank_zero:
            write_json_atomic(self.path, self.data)

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.save()
