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

from mopo_lightning.files import write_text_atomic
from mopo_lightning.machine import is_rank_zero

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
    """Keeps ``<run_dir>/results.json`` up to date with every MuJoCo evaluation (the evaluation hands it each finished
    entry: ``record_evaluation``, a ``callbacks.evaluation.EvaluationRecord``).

    Fields: ``task``, ``dataset``, ``seed``, ``method`` (``fit --method``, a sweep's arm), ``status`` and
    ``status_detail`` (``STATUSES``), ``planned`` (the budget: ``training.run_record.planned_budget``),
    ``dynamics`` (holdout MSE of the elites, elites, epochs, seconds), ``evaluations`` (list of
    {``sac_updates``, ``return_mean``, ``normalized_score``}), ``final_normalized_score`` and ``final_return``
    (the latest evaluation; the score is null for variants without D4RL reference scores) and ``seconds`` per
    stage. With ``callbacks.premise`` on, each
    evaluation also holds ``premise`` (its ``premise/`` figures without the prefix, and ``penalty_kind``)
    and ``final_premise`` repeats the latest one. ``penalty``: the penalty kind, lambda, its units and the
    lambda applied to the raw penalty (``dynamics.penalty_scales``: every kind's scale on the data).
    ``provenance``: what made the numbers (``mopo_lightning.provenance``: package version and commit, libraries,
    device); a resume with other code, libraries or device appends its own to ``provenance_resumes``.

    The record only grows: a resume keeps every field (``restore``), replaces the budget only once training
    resumes (``on_train_start``), and a resume at or past its budget, which trains nothing, leaves the record
    as it was (``ended_before``, read by ``training.run_record.record_end``).
    """

    def __init__(self, path: str | Path, header: dict[str, Any],
                 tensorboard_hparams: dict[str, Any] | None = None) -> None:
        """
        Args:
            path: the ``results.json`` file.
            header: what the run is (task, data, seed, method, h, lambda, threads, planned budget, provenance).
            tensorboard_hparams: the run's defining knobs for TensorBoard's hparams view, scored by the final
                normalised score (None: none logged).

        Only the first process writes the file (``machine.is_rank_zero``: DDP runs every callback on every rank).
        """
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
        self._fit_trainer: L.Trainer | None = None
        """The SAC stage's Trainer once training starts: it says which process is the first."""
        self.tensorboard_hparams = dict(tensorboard_hparams or {})
        self.trained = False
        """Set when SAC training starts (Lightning skips ``on_train_start`` when the budget is already done)."""
        self.ended_before: dict[str, Any] | None = None
        """A resumed record's status and detail when it had ended (finished, stopped, failed), else None."""
        self._budget: Any = None  # this start's ``planned``, recorded once training resumes

    def restore(self) -> None:
        """A resume continues the recorded run: every field is kept (evaluations, the final score and premise,
        dynamics, penalty, seconds, status, planned budget, provenance). This start's threads are recorded;
        its budget replaces the recorded one once training resumes (``on_train_start``), where evaluations
        past the restored checkpoint are dropped (the resumed run redoes them, bit for bit). A fresh start,
        ``--overwrite`` included, never reads the old file."""
        if not self.path.exists():
            return
        previous = json.loads(self.path.read_text())
        mine = self.data
        self._budget = mine.get("planned")
        self.data = {**mine, **previous, "seconds": {**mine["seconds"], **previous.get("seconds", {})}}
        if "threads" in mine:
            self.data["threads"] = mine["threads"]
        if previous.get("status") in (FINISHED, STOPPED, FAILED):
            self.ended_before = {"status": previous["status"], **previous.get("status_detail", {})}
        first, now = previous.get("provenance"), mine.get("provenance")
        if first is None:
            self.data["provenance"] = now  # a record from before provenance was kept
        elif now is not None and now != first and now not in previous.get("provenance_resumes", []):
            self.data["provenance_resumes"] = [*previous.get("provenance_resumes", []), now]

    def record_stage1(self, info: dict[str, Any]) -> None:
        """Stage 1 has held: record it (``dynamics``, ``seconds.dynamics``) and save, ``running`` again unless the
        run had finished (it says so once training resumes). A resume keeps the recorded stage 1: it says how
        the run got its model (trained, or loaded from the cache), not that the resume loaded it."""
        self.data.setdefault("dynamics", info)
        self.data["seconds"].setdefault("dynamics", info["seconds"])
        if self.finished_before():
            self.save()
        else:
            self.set_status(RUNNING)

    def finished_before(self) -> bool:
        """A resumed record that had finished, and no training since: nothing may change its status."""
        return not self.trained and (self.ended_before or {}).get("status") == FINISHED

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
        self._fit_trainer = trainer
        self.trained = True
        self.data["status"] = RUNNING
        self.data.pop("status_detail", None)
        if self._budget is not None:  # a resume that trains: its budget is the run's now
            self.data["planned"] = self._budget
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
        self.save()  # running, with the budget this start trains to

    def record_evaluation(self, trainer: L.Trainer, entry: dict[str, Any]) -> None:
        """Record an evaluation's finished history entry (``MuJoCoEvaluation``'s ``results``) and save."""
        score = entry["eval/normalized_score"]
        score = None if score is None or not math.isfinite(score) else score  # variants: no D4RL score
        self.data["evaluations"].append(
            {
                "sac_updates": entry["sac_updates"],
                "return_mean": entry["eval/return_mean"],
                "return_std": entry["eval/return_std"],
                "normalized_score": score,
                **({"premise": entry["premise"]} if "premise" in entry else {}),
            }
        )
        self.data["final_premise"] = entry.get("premise")
        self.data["final_normalized_score"] = score
        self.data["final_return"] = entry["eval/return_mean"]
        if trainer.logger is not None and score is not None:
            trainer.logger.log_metrics({HP_METRIC: score}, step=entry["sac_updates"])
        self.save()

    def save(self) -> None:
        """Rewrite the file (rank 0 only); the policy-stage clock is updated first."""
        if self._start is not None:
            self.data["seconds"]["policy"] = self._offset + time.perf_counter() - self._start
        if is_rank_zero(self._fit_trainer):
            write_json_atomic(self.path, self.data)

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.save()
