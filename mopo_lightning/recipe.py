"""MOPO, the recipe: Yu et al. 2020, Algorithm 1, with MBPO's loop (Janner et al. 2019), read top to bottom.

``train_mopo`` is the algorithm in the paper's order: the data; stage 1, the probabilistic ensemble (or the
cached model these settings made); the penalised model MDP r - lambda * u and its branched rollouts; SAC on
real and model rows, evaluated in the real MuJoCo env; the results. ``mopo-lightning fit`` parses and checks
a config and calls it (so does every ``sweep`` trial, through ``fit``); Python callers call it directly with
the same objects (``tests/conftest.py::fit_run`` builds them from a config).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import lightning as L
from lightning.pytorch.loggers import TensorBoardLogger

from mopo_lightning.callbacks.checkpointing import (
    AtomicCheckpointIO,
    EpochCheckpoint,
    GracefulStop,
    RNGStates,
)
from mopo_lightning.callbacks.evaluation import MuJoCoEvaluation
from mopo_lightning.callbacks.premise import PremiseMonitor
from mopo_lightning.callbacks.progress_bar import StageProgressBar
from mopo_lightning.callbacks.results import RunResults
from mopo_lightning.callbacks.tensorboard_layout import TensorBoardLayout
from mopo_lightning.collection.missing import CollectIfMissing, collect_if_missing
from mopo_lightning.files import write_text_atomic
from mopo_lightning.guards import NonFiniteError
from mopo_lightning.machine import is_rank_zero, torch_threads
from mopo_lightning.model_env.mdp import ModelMDP
from mopo_lightning.model_env.settings import MOPOSettings
from mopo_lightning.policy.sac import SACModule
from mopo_lightning.provenance import provenance
from mopo_lightning.training.datamodule import OfflineDataModule
from mopo_lightning.training.mixed_batches import tensorboard_rollout_log
from mopo_lightning.training.mixed_data import MixedDataModule
from mopo_lightning.training.run_dir import RunDirectory
from mopo_lightning.training.run_record import (
    checkpoint_left,
    closing_summary,
    planned_budget,
    record_end,
    record_stage1_end,
    recorded,
)
from mopo_lightning.training.stage1 import dynamics_stage
from mopo_lightning.transitions import OBSERVATION

THREAD_PHASES = {
    "dynamics": "stage 1 (the ensemble's training steps)",
    "rollout": "the model rollouts (batched ensemble steps of every start state)",
    "sac": "the SAC updates and the MuJoCo evaluation that runs between epochs",
}
"""Phases with their own torch CPU thread count; measured by ``benchmarks/threads.py``."""


@dataclass
class RunSettings:
    """Where a run lives and how its stages run (``fit``'s run options; the README's table of them)."""

    run_dir: Path
    config: dict[str, Any] = field(default_factory=dict)
    """The resolved config: ``run.json`` keeps the keys that define the run (``training/run_dir.py``)."""
    config_yaml: str | None = None
    """Written as ``<run_dir>/config.yaml`` once stage 1 holds (the command that made it, as YAML)."""
    stage: Literal["all", "dynamics"] = "all"
    method: str | None = None
    seed: int = 0
    threads: dict[str, int] = field(default_factory=lambda: dict.fromkeys(THREAD_PHASES, 1))
    overwrite: bool = False
    checkpoint_every_n_epochs: int = 1
    keep_checkpoints: int = 2
    dynamics_checkpoint: str | None = None
    dynamics_cache: Path | None = None
    """Stage 1's cache; None: the run root's (``dynamics.fingerprint.dynamics_cache_dir``)."""
    log_every_n_steps: int = 50


def train_mopo(data: OfflineDataModule, sac: SACModule, mopo: MOPOSettings, dynamics: dict[str, Any],
               run: RunSettings, *, trainer: dict[str, Any] | None = None, evaluation: dict[str, Any] | None = None,
               premise: dict[str, Any] | None = None, collect: CollectIfMissing | None = None,
               ckpt_path: str | None = None) -> RunResults:
    """Train MOPO; returns the run's ``results.json`` record. ``trainer``: ``lightning.Trainer`` arguments of the
    SAC stage (stage 1 shares its hardware); ``evaluation`` and ``premise``: their callbacks' arguments;
    ``ckpt_path``: ``last`` or a SAC checkpoint to resume."""
    trainer, evaluation = dict(trainer or {}), dict(evaluation or {})
    first = is_rank_zero()  # DDP launchers re-run the command on the other ranks: only the first checks and writes
    directory = RunDirectory(run.run_dir, rank_zero=first)
    resuming = ckpt_path is not None
    ckpt_path = directory.prepare(run.config, ckpt_path, run.overwrite)  # checked before any work
    hp = data.hparams
    results = run_results(data, mopo, run, trainer, evaluation)
    if first:  # once, so that a speed figure says its threads (results.json keeps them too)
        print("torch threads: " + ", ".join(f"{phase} {n}" for phase, n in run.threads.items()))
    if resuming:
        results.restore()  # a fresh start (--overwrite too) keeps nothing of an old results.json
    with recorded(results, directory, resuming):
        # 1. The data: collected first where the config says so, then read and validated (bad data stop here,
        #    before the run directory is touched).
        collect_if_missing(hp.path, collect or CollectIfMissing(), data.task_spec, run.seed)
        data.setup("fit")
        directory.start()
        if not resuming:  # a resume says so once stage 1 is loaded: a refused one changes nothing
            results.set_status("running")

        # 2. Stage 1: the probabilistic ensemble, trained to member-wise early stopping (or loaded).
        model, info = dynamics_stage(
            data, num_threads=run.threads["dynamics"], hparams=dynamics, run_dir=run.run_dir,
            checkpoint=run.dynamics_checkpoint, cache_dir=run.dynamics_cache,
            trainer_kwargs=stage1_trainer_kwargs(trainer, run), logger=tensorboard(run.run_dir, "dynamics"))
        if run.config_yaml is not None and first:  # once the inputs held: a refused run changes nothing
            write_text_atomic(run.run_dir / "config.yaml", run.config_yaml)
        results.record_stage1(info)
        if run.stage == "dynamics":
            record_stage1_end(results)
            print(f"dynamics saved to {run.run_dir / 'dynamics.ckpt'}")
            return results

        # 3. The penalised model MDP: r - lambda * u, with lambda in the raw penalty's units (built once, handed
        #    to all that steps the model), rolled out h steps from real start states by SAC's current policy into
        #    the model buffer, mixed with real rows.
        mdp = ModelMDP.from_settings(mopo, info["penalty_scales"]["kinds"], data.task_spec)
        logger = tensorboard(run.run_dir, "sac") if trainer.get("logger") in (None, True) else trainer["logger"]
        batches = MixedDataModule(data.rows(), data.task_spec, model.ensemble, mdp, mopo, sac,
                                  batch_size=hp.batch_size, updates_per_epoch=hp.updates_per_epoch, seed=hp.seed,
                                  log=None if logger is False else tensorboard_rollout_log(logger),
                                  rollout_threads=run.threads["rollout"])
        results.data["score_reference"] = data.score_reference
        results.data["penalty"] = {"penalty_kind": mopo.penalty_kind, "penalty_coef": mopo.penalty_coef,
                                   "penalty_units": mopo.penalty_units, "penalty_coef_raw_units": mdp.penalty_coef_raw}

        # 4. SAC on the mixed batches, evaluated in the real env, the premise measured at each evaluation (the
        #    monitor adds its figures to the evaluation's entry, which the results then record).
        monitor = PremiseMonitor(**(premise or {}), ensemble=model.ensemble, data_observations=data.rows()[OBSERVATION],
                                 mdp=mdp)
        evaluator = MuJoCoEvaluation(**{**evaluation, "task": evaluation.get("task") or data.task_spec},
                                     listeners=[monitor] if monitor.every_n_evals else [], results=results)
        sac_trainer = policy_trainer(trainer, run, logger,
                                     [evaluator, monitor, results, TensorBoardLayout(evaluator.task)])
        try:
            with torch_threads(run.threads["sac"]):  # the updates, and the evaluation between epochs
                sac_trainer.fit(sac, datamodule=batches, ckpt_path=ckpt_path)
        except NonFiniteError as error:
            raise NonFiniteError(f"{error}; the run stopped. {checkpoint_left(run.run_dir)}") from error

        # 5. The results: finished, or stopped short with the reason (a resume past its budget changes nothing);
        #    the score beside the data's own.
        record_end(results, sac_trainer, int(sac.sac_updates))
        if is_rank_zero(sac_trainer):
            print(closing_summary(results, run.run_dir, data.data.file(), data.task_spec, int(sac.sac_updates)))
    return results


def run_results(data: OfflineDataModule, mopo: MOPOSettings, run: RunSettings, trainer: dict[str, Any],
                evaluation: dict[str, Any]) -> RunResults:
    """The run's ``results.json`` record: what it is (task, data, seed, method, h, lambda), its planned budget and
    its provenance (this code's version and commit, the libraries, the device: ``mopo_lightning.provenance``)."""
    hp = data.hparams
    header = {
        "task": hp.task, "dataset": hp.path or hp.dataset, "seed": run.seed, "method": run.method,
        "penalty_coef": mopo.penalty_coef, "rollout_length": mopo.rollout_length, "threads": dict(run.threads),
        "planned": planned_budget(run.stage, trainer, hp.updates_per_epoch, evaluation.get("every_n_epochs", 1)),
        "provenance": provenance(run.threads, trainer.get("accelerator", "auto"))}
    tensorboard_hparams = {"task": hp.task, "dataset": str(hp.dataset or hp.path), "seed": hp.seed,
                           "rollout_length": mopo.rollout_length, "penalty_coef": mopo.penalty_coef,
                           "real_ratio": mopo.real_ratio, "penalty_kind": mopo.penalty_kind}
    return RunResults(run.run_dir / "results.json", header, tensorboard_hparams)


def tensorboard(run_dir: Path, stage: str) -> TensorBoardLogger:
    """One TensorBoard directory per stage; a fixed version keeps it one directory across restarts."""
    return TensorBoardLogger(run_dir, name="tensorboard", version=stage, default_hp_metric=False)


def stage1_trainer_kwargs(trainer: dict[str, Any], run: RunSettings) -> dict[str, Any]:
    """Stage 1 runs on the SAC stage's hardware, with its own loop settings (``training/stage1.py``)."""
    keys = ("accelerator", "devices", "strategy", "num_nodes")
    return {**{k: trainer.get(k, "auto" if k != "num_nodes" else 1) for k in keys},
            "log_every_n_steps": run.log_every_n_steps,
            "enable_progress_bar": trainer.get("enable_progress_bar") is not False}


def policy_trainer(trainer: dict[str, Any], run: RunSettings, logger: Any, callbacks: list[L.Callback]) -> L.Trainer:
    """The SAC stage's Trainer: the config's arguments, MOPO's callbacks, atomic resumable checkpoints."""
    config = {**trainer, "logger": logger}
    config.setdefault("default_root_dir", str(run.run_dir))
    if config.get("enable_model_summary") is None:
        config["enable_model_summary"] = False  # two tables of 'FLOPs 0' tell a user nothing
    # SAC optimises manually with two backward passes per update (critics; actor and alpha), each touching
    # only some parameters: DDP's reducer needs find_unused_parameters.
    if config.get("strategy") in ("ddp", "ddp_spawn"):
        config["strategy"] = f"{config['strategy']}_find_unused_parameters_true"
    config["plugins"] = config.get("plugins") or [AtomicCheckpointIO(background=True)]  # writes beside training
    checkpoint = EpochCheckpoint(run.run_dir / "sac", every_n_epochs=run.checkpoint_every_n_epochs,
                                 keep=run.keep_checkpoints)
    own = [*callbacks, RNGStates(), GracefulStop(run.run_dir / "sac"), checkpoint]
    if config.get("enable_progress_bar") is not False:
        own.append(StageProgressBar("stage 2 (SAC)", refresh_rate=10))  # a redraw per update costs ~2%
    config["callbacks"] = [*(config.get("callbacks") or []), *own]
    return L.Trainer(**config)
