"""``mopo-lightning fit``: a LightningCLI whose ``fit`` runs MOPO's two stages.

Stage 1 trains the dynamics ensemble (``DynamicsModule``) to early stopping and saves
``<run_dir>/dynamics.ckpt``; when that file (or ``--dynamics_checkpoint``) exists it is loaded
instead, so a restarted run never retrains its model. Stage 2 trains SAC (``SACModule``) on mixed
real/model batches from ``D4RLDataModule``, evaluating in MuJoCo every epoch.

Everything is one config tree (``--print_config`` shows it): ``trainer``, ``model`` (SAC), ``data``,
``dynamics`` (the ensemble), ``evaluation`` and the run options below. Observation and action sizes
are linked from ``data.task``, never typed into YAML.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any, Literal, Optional

import lightning as L
import torch
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI
from lightning.pytorch.loggers import TensorBoardLogger

from mopo_lightning.callbacks.checkpointing import AtomicCheckpointIO, EpochCheckpoint, GracefulStop, RNGStates
from mopo_lightning.callbacks.evaluation import MuJoCoEvaluation
from mopo_lightning.callbacks.premise import PremiseMonitor
from mopo_lightning.callbacks.progress_bar import StageProgressBar
from mopo_lightning.callbacks.results import RunResults
from mopo_lightning.console import quiet_third_party
from mopo_lightning.data.d4rl import DatasetError
from mopo_lightning.data.summary import summarize
from mopo_lightning.guards import CheckpointError, ConfigError, NonFiniteError
from mopo_lightning.training.datamodule import D4RLDataModule
from mopo_lightning.training.run_dir import RunDirectory, check_checkpoint
from mopo_lightning.training.stage1 import dynamics_stage
from mopo_lightning.training.mixed_batches import tensorboard_rollout_log
from mopo_lightning.dynamics.module import DynamicsModule
from mopo_lightning.policy.sac import SACModule
from mopo_lightning.tasks import get_task


THREAD_PHASES = {
    "dynamics": "stage 1 (the ensemble's training steps)",
    "rollout": "the model rollouts (batched ensemble steps of every start state)",
    "sac": "the SAC updates and the MuJoCo evaluation that runs between epochs",
}
"""Phases with their own ``--threads.<phase>``; measured by ``benchmarks/threads.py``."""

RENAMED_KEYS = {"data.penalty": "data.penalty_kind", "dynamics.num_hidden": "dynamics.num_layers"}
"""Config keys renamed in 0.2 (old -> new): an old key fails with one line naming the new one."""


def check_renamed_keys(argv: list[str]) -> None:
    """Raise ``ConfigError`` for a renamed key on the command line or in a ``--config`` YAML."""
    from mopo_lightning.files import read_yaml

    def refuse(old: str, where: str) -> None:
        raise ConfigError(f"{where}: `{old}` was renamed to `{RENAMED_KEYS[old]}`")

    for i, token in enumerate(argv):
        key = token.removeprefix("--").split("=", 1)[0]
        if token.startswith("--") and key in RENAMED_KEYS:
            refuse(key, "command line")
        if token == "--config" and i + 1 < len(argv) or token.startswith("--config="):
            path = Path(argv[i + 1] if token == "--config" else token.split("=", 1)[1])
            tree = read_yaml(path) if path.is_file() else None
            for old in RENAMED_KEYS:
                node = tree
                for part in old.split("."):
                    node = node.get(part) if isinstance(node, dict) and part in node else None
                    if node is None:
                        break
                else:
                    refuse(old, str(path))


def _first_process() -> bool:
    """True in the process that starts a run: DDP launchers re-run the command with these set on the others
    (before the Trainer exists, so Lightning's own rank is not known yet)."""
    return all(int(os.environ.get(key) or 0) == 0 for key in ("RANK", "LOCAL_RANK", "NODE_RANK", "SLURM_PROCID"))


def _log_period(log_every_n_steps: int | None) -> int:
    return 50 if log_every_n_steps is None else log_every_n_steps  # Lightning's default


def _obs_dim(task: str) -> int:
    return get_task(task).obs_dim


def _act_dim(task: str) -> int:
    return get_task(task).act_dim


class MOPOCLI(LightningCLI):
    """LightningCLI for MOPO; see the module docstring."""

    def __init__(self, args: Any = None, run: bool = True) -> None:
        super().__init__(
            SACModule,
            D4RLDataModule,
            auto_configure_optimizers=False,  # SAC optimises manually with its own three optimisers
            save_config_kwargs={"overwrite": True},
            seed_everything_default=0,
            args=args,
            run=run,
            # exit_on_error=False: a parse error raises ArgumentError, which cli.main prints as one line
            parser_kwargs={"description": "MOPO: model-based offline policy optimisation (Yu et al. 2020)",
                           "prog": "mopo-lightning", "exit_on_error": False},
        )

    # ------------------------------------------------------------------ config tree
    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        parser.add_argument("--run_name", type=Optional[str], default=None,
                            help="outputs go to <run_root>/<run_name>/ (default: <task>-<dataset>-s<seed>)")
        parser.add_argument("--run_root", type=str, default="checkpoints", help="parent of run directories")
        parser.add_argument("--method", type=Optional[str], default=None,
                            help="the method this run belongs to in reports, e.g. MOPO or MBPO (a sweep's arm); "
                                 "a label: it changes no setting")
        parser.add_argument("--stage", type=Literal["all", "dynamics"], default="all",
                            help="`dynamics` runs stage 1 alone and stops after saving dynamics.ckpt")
        parser.add_argument("--num_threads", type=int, default=1,
                            help="torch CPU threads; 1 avoids OpenMP spin-waiting on small machines")
        for phase, what in THREAD_PHASES.items():
            parser.add_argument(f"--threads.{phase}", type=int | None, default=None,
                                help=f"torch CPU threads of {what} (default: --num_threads)")
        parser.add_argument("--overwrite", type=bool, default=False,
                            help="delete a run already in <run_root>/<run_name> and start fresh (never the default)")
        parser.add_argument("--checkpoint_every_n_epochs", type=int, default=1,
                            help="SAC checkpoint cadence; each holds the model buffer (~200 MB at h = 5)")
        parser.add_argument("--keep_checkpoints", type=int, default=2,
                            help="newest epoch checkpoints kept (a corrupt newest one falls back to the previous)")
        parser.add_argument("--dynamics_checkpoint", type=Optional[str], default=None,
                            help="load this dynamics.ckpt instead of <run_dir>/dynamics.ckpt")
        parser.add_argument("--dynamics_cache", type=Optional[str], default=None,
                            help="cache of trained ensembles keyed by their fingerprint, shared by runs "
                                 "(default <run_root>/.dynamics_cache)")
        parser.add_class_arguments(DynamicsModule, "dynamics", skip={"obs_dim", "act_dim"}, instantiate=False)
        parser.add_lightning_class_args(MuJoCoEvaluation, "evaluation")
        parser.add_lightning_class_args(PremiseMonitor, "premise")  # MOPO's premise at each evaluation
        parser.link_arguments("data.task", "model.obs_dim", compute_fn=_obs_dim)
        parser.link_arguments("data.task", "model.act_dim", compute_fn=_act_dim)
        parser.link_arguments("seed_everything", "data.seed")
        # SAC logs every n updates itself; Lightning must flush at the same period or it re-writes stale values.
        parser.link_arguments("trainer.log_every_n_steps", "model.log_every_n", compute_fn=_log_period)

    def parse_arguments(self, parser: LightningArgumentParser, args: Any) -> None:
        quiet_third_party()  # before LightningCLI seeds and builds anything
        if args is None or isinstance(args, list):
            check_renamed_keys(sys.argv[1:] if args is None else list(args))
        super().parse_arguments(parser, args)
        subcommand = self.config.get("subcommand")
        ckpt_path = self.config[subcommand].get("ckpt_path") if subcommand else None
        if ckpt_path not in (None, "last"):
            check_checkpoint(ckpt_path)  # before LightningCLI itself unpickles it for hyper-parameters

    def before_instantiate_classes(self) -> None:
        torch.set_num_threads(self._cfg("num_threads"))

    def _threads(self, phase: str) -> int:
        """Torch CPU threads of ``phase`` (``THREAD_PHASES``): ``--threads.<phase>``, else ``--num_threads``."""
        value = self._cfg(f"threads.{phase}")
        count = self._cfg("num_threads") if value is None else value
        if count < 1:
            raise ConfigError(f"--threads.{phase} must be at least 1, got {count}")
        return count

    # ------------------------------------------------------------------ run directory and trainer
    def _cfg(self, key: str, default: Any = None) -> Any:
        return self._get(self.config, key, default)

    @property
    def run_dir(self) -> Path:
        name = self._cfg("run_name")
        if not name:
            data = self._cfg("data")
            source = Path(data.path).stem if data.path else data.dataset  # data.path wins, as in the DataModule
            name = f"{data.task}-{source}-s{self._cfg('seed_everything')}"
        return Path(self._cfg("run_root")) / name

    def _logger(self, version: str) -> TensorBoardLogger:
        # A fixed version keeps one TensorBoard directory per stage, also across restarts.
        return TensorBoardLogger(self.run_dir, name="tensorboard", version=version, default_hp_metric=False)

    def instantiate_trainer(self, **kwargs: Any) -> L.Trainer:
        config = {**self._get(self.config_init, "trainer", default={}), **kwargs}
        if config.get("logger") in (None, True):
            config["logger"] = self._logger("sac")
        if config.get("default_root_dir") is None:
            config["default_root_dir"] = str(self.run_dir)
        if config.get("enable_model_summary") is None:
            config["enable_model_summary"] = False  # two tables of 'FLOPs 0' tell a user nothing
        data = self._cfg("data")
        self.results = RunResults(
            self.run_dir / "results.json",
            {"task": data.task, "dataset": data.path or data.dataset, "seed": self._cfg("seed_everything"),
             "method": self._cfg("method"), "penalty_coef": data.penalty_coef,
             "rollout_length": data.rollout_length, "planned": self._planned(config)},
        )
        for key in ("max_epochs", "max_steps"):
            value = config.get(key)
            if value is not None and value < -1:
                raise ConfigError(f"--trainer.{key} must be a positive number or -1 (no limit), got {value}")
        every, keep = self._cfg("checkpoint_every_n_epochs"), self._cfg("keep_checkpoints")
        if every < 1 or keep < 1:
            raise ConfigError(f"--checkpoint_every_n_epochs ({every}) and --keep_checkpoints ({keep}) must be >= 1")
        checkpoint = EpochCheckpoint(self.run_dir / "sac", every_n_epochs=every, keep=keep)
        # SAC optimises manually with three backward passes per update; DDP's reducer then needs
        # find_unused_parameters (each pass touches only its own network), so plain "ddp" is upgraded.
        if config.get("strategy") in ("ddp", "ddp_spawn"):
            config["strategy"] = f"{config['strategy']}_find_unused_parameters_true"
        if config.get("plugins") is None:
            config["plugins"] = [AtomicCheckpointIO()]
        extra = [self._get(self.config_init, key) for key in self._parser(self.subcommand).callback_keys]
        callbacks = [*extra, self.results, RNGStates(), GracefulStop(self.run_dir / "sac"), checkpoint]
        if config.get("enable_progress_bar") is not False:
            callbacks.append(StageProgressBar("stage 2 (SAC)", refresh_rate=10))  # a redraw per update costs ~2%
        return self._instantiate_trainer(config, callbacks)

    # ------------------------------------------------------------------ the two stages
    def fit(self, model: SACModule, datamodule: D4RLDataModule, ckpt_path: Optional[str] = None,
            **kwargs: Any) -> None:
        """Stage 1 (dynamics, or load it), then stage 2 (SAC on the penalised model).

        The run directory and ``--ckpt_path`` are checked before any work (``training/run_dir.py``).
        """
        config = self.config.get(self.subcommand) if self.subcommand else self.config
        run = RunDirectory(self.run_dir, rank=0 if _first_process() else 1)
        resuming = ckpt_path is not None
        ckpt_path = run.prepare(config.as_dict(), ckpt_path, self._cfg("overwrite"))
        self.results.rank_zero = run.rank == 0
        self._resuming = resuming
        if resuming:
            self.results.restore()  # a fresh start (--overwrite too) keeps nothing of an old results.json
        try:
            self._fit(model, datamodule, ckpt_path, run)
        except NonFiniteError as error:
            self._record_failure(run, error)
            raise NonFiniteError(f"{error}; the run stopped. {self._checkpoint_left()}") from error
        except (KeyboardInterrupt, SystemExit, Exception) as error:
            self._record_failure(run, error)
            raise

    def _record_failure(self, run: RunDirectory, error: BaseException) -> None:
        """``results.json`` says how a started run ended: stopped by a signal, or failed with the error."""
        if not run.started:
            return  # bad input: the run never started and leaves no trace
        if self._resuming and isinstance(error, (ConfigError, DatasetError, CheckpointError)):
            return  # a refused resume (a corrupt dynamics.ckpt, say) leaves the run as it was
        if isinstance(error, KeyboardInterrupt):
            self.results.set_status("stopped", signal=2)
        elif isinstance(error, SystemExit) and isinstance(error.code, int) and error.code > 128:
            self.results.set_status("stopped", signal=error.code - 128)
        elif isinstance(error, SystemExit) and error.code in (0, None):
            return
        else:
            message = " ".join(str(error).split()) or type(error).__name__
            self.results.set_status("failed", error=f"{type(error).__name__}: {message}"[:500])

    def _planned(self, trainer_config: dict[str, Any]) -> dict[str, Any]:
        """The run's budget as configured (``None``: unlimited), so a report can tell a finished run."""
        if self._cfg("stage") == "dynamics":
            return {"stage": "dynamics"}
        epochs, steps = trainer_config.get("max_epochs"), trainer_config.get("max_steps")
        if epochs is None and steps in (None, -1):
            epochs = 1000  # Lightning's default when neither is set
        epochs = None if epochs is None or epochs < 0 or steps not in (None, -1) else int(epochs)
        every = max(1, int(self._cfg("evaluation.every_n_epochs") or 1))
        updates = self._cfg("data.updates_per_epoch")
        return {"stage": "all", "epochs": epochs, "sac_updates": None if epochs is None else epochs * updates,
                "evaluations": None if epochs is None else epochs // every}

    def _record_end(self, model: SACModule) -> None:
        """``finished`` when the planned SAC updates were all done; else ``stopped`` with the reason."""
        planned = self.results.data["planned"].get("sac_updates")
        done = int(model.sac_updates)
        if planned is None or done >= planned:
            self.results.set_status("finished")
        else:
            self.results.set_status("stopped", reason=f"the trainer ended at {done} of {planned} planned SAC "
                                                      "updates (trainer.max_time, max_steps or a callback)")

    def _checkpoint_left(self) -> str:
        """The truth about what a stopped run left to resume from."""
        last = self.run_dir / "sac" / EpochCheckpoint.LAST
        if last.exists():
            return f"Its last good checkpoint is {last.resolve()}, written before the fault"
        if (self.run_dir / "dynamics.ckpt").exists():
            return "No SAC checkpoint was written yet; the trained dynamics model is kept"
        return "No checkpoint was written yet"

    def _fit(self, model: SACModule, datamodule: D4RLDataModule, ckpt_path: str | None, run: RunDirectory) -> None:
        datamodule.prepare_data()
        datamodule.setup("fit")  # loads and validates the data: a bad file stops here, before anything is written
        run.start()
        if not self._resuming:  # a resume says so once its stage 1 is loaded: a refused one changes nothing
            self.results.set_status("running")
        dynamics, info = self.dynamics_stage(datamodule)
        self.results.data["dynamics"] = info
        self.results.data["seconds"]["dynamics"] = info["seconds"]
        self.results.save()
        if self._cfg("stage") == "dynamics":
            self.results.set_status("finished")
            print(f"dynamics saved to {self.run_dir / 'dynamics.ckpt'}")
            return
        datamodule.attach_dynamics(dynamics.ensemble, penalty_scales=info["penalty_scales"]["kinds"])
        datamodule.rollout_threads = self._threads("rollout")
        torch.set_num_threads(self._threads("sac"))  # the updates, and evaluation (a callback) with them
        logger = self.trainer.logger
        datamodule.bind_learner(model, log=None if logger is None else tensorboard_rollout_log(logger))
        self.trainer.fit(model, datamodule=datamodule, ckpt_path=ckpt_path)
        self._record_end(model)
        if self.trainer.is_global_zero:
            print(self.closing_summary(datamodule, model))

    def closing_summary(self, datamodule: D4RLDataModule, model: SACModule) -> str:
        """What a user needs at the end: the score beside the data's own, updates, time per stage, paths."""
        data, task = self.results.data, datamodule.task_spec
        try:
            behaviour = summarize(datamodule.dataset_path(), task)
        except DatasetError:
            behaviour = None
        if task.has_reference_scores:
            own = "" if behaviour is None else (f" (the data's own: mean {behaviour['normalized_score']['mean']:.2f}, "
                                                f"best episode {behaviour['normalized_score']['max']:.2f})")
            score = data.get("final_normalized_score")
            headline = f"final normalised score {'n/a' if score is None else f'{score:.2f}'}{own}"
        else:
            own = "" if behaviour is None else (f" (the data's own: mean {behaviour['return']['mean']:.1f}, "
                                                f"best episode {behaviour['return']['max']:.1f})")
            ret = data.get("final_return")
            headline = f"final return {'n/a' if ret is None else f'{ret:.1f}'}{own}"
        seconds = data.get("seconds", {})
        return "\n".join([
            f"MOPO run {self.run_dir}: {headline}",
            f"  SAC updates {int(model.sac_updates)}; wall time: stage 1 {seconds.get('dynamics', 0.0):.0f} s, "
            f"stage 2 {seconds.get('policy', 0.0):.0f} s",
            f"  results:     {self.results.path}",
            f"  TensorBoard: tensorboard --logdir {self.run_dir / 'tensorboard'}",
        ])

    def dynamics_stage(self, datamodule: D4RLDataModule) -> tuple[DynamicsModule, dict[str, Any]]:
        """Stage 1 through ``training.stage1.dynamics_stage`` with this run's settings."""
        trainer_cfg = self._get(self.config_init, "trainer", default={})
        return dynamics_stage(
            datamodule,
            num_threads=self._threads("dynamics"),
            hparams=dict(self._cfg("dynamics")),
            run_dir=self.run_dir,
            checkpoint=self._cfg("dynamics_checkpoint"),
            cache_dir=self._cfg("dynamics_cache") or Path(self._cfg("run_root")) / ".dynamics_cache",
            trainer_kwargs={
                "accelerator": trainer_cfg.get("accelerator", "auto"),
                "devices": trainer_cfg.get("devices", "auto"),
                "strategy": trainer_cfg.get("strategy", "auto"),
                "num_nodes": trainer_cfg.get("num_nodes", 1),
                "log_every_n_steps": _log_period(trainer_cfg.get("log_every_n_steps")),
                "enable_progress_bar": trainer_cfg.get("enable_progress_bar") is not False,
            },
            logger=self._logger("dynamics"),
        )


def main(args: Any = None) -> None:
    """Run the LightningCLI (``fit``, ``validate``)."""
    MOPOCLI(args=args)
