"""``mopo-lightning fit``: parse and check one config tree, then run ``recipe.train_mopo`` on it.

The tree (``--print_config`` shows it): ``trainer`` (the SAC stage's Lightning Trainer), ``model`` (SAC),
``data`` (the offline data), ``mopo`` (h, lambda, the penalty, the rollouts, the real ratio), ``dynamics`` (the
ensemble), ``evaluation``, ``premise``, ``collect`` (the one file a run may collect when missing) and the run
options below. Model sizes are linked from the data (a Minari dataset's own spaces), never typed into YAML.

LightningCLI parses, links and instantiates with ``run=False``; the Trainer is built by the recipe, with the
callbacks that need the trained model, so this module runs no stage logic.
"""

from __future__ import annotations

import sys
import warnings
from pathlib import Path
from typing import Any, Literal

import torch
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI

from mopo_lightning.callbacks.evaluation import MuJoCoEvaluation
from mopo_lightning.callbacks.premise import PremiseMonitor
from mopo_lightning.collection.missing import CollectIfMissing
from mopo_lightning.config_keys import check_renamed_keys
from mopo_lightning.console import quiet_third_party
from mopo_lightning.dynamics.fingerprint import dynamics_cache_dir
from mopo_lightning.dynamics.module import DynamicsModule, time_limit
from mopo_lightning.guards import ConfigError
from mopo_lightning.machine import auto_threads, thread_cap
from mopo_lightning.model_env.settings import MOPOSettings
from mopo_lightning.policy.sac import SACModule
from mopo_lightning.recipe import THREAD_PHASES, RunSettings, train_mopo
from mopo_lightning.training.datamodule import OfflineDataModule
from mopo_lightning.training.run_dir import check_checkpoint

# constructor arguments the recipe hands in (collaborators, not config)
PREMISE_SKIP = {"ensemble", "data_observations", "mdp"}
EVALUATION_SKIP = {"listeners", "results"}


def resolve_threads(phase: str, num_threads: int | str, override: int | None, cap: int | None = None) -> int:
    """``phase``'s thread count: ``override`` (``--threads.<phase>``), else ``num_threads``; ``auto`` resolves to
    ``machine.auto_threads(phase, cap)`` (``cap``: ``machine.thread_cap()``). An explicit number is used as given."""
    if override is not None:
        if override < 1:
            raise ConfigError(f"--threads.{phase} must be at least 1, got {override}")
        return override
    if num_threads == "auto":
        return auto_threads(phase, thread_cap() if cap is None else cap)
    if num_threads < 1:
        raise ConfigError(f"--num_threads must be at least 1 or auto, got {num_threads}")
    return num_threads


def _log_period(log_every_n_steps: int | None) -> int:
    return 50 if log_every_n_steps is None else log_every_n_steps  # Lightning's default


class MOPOCLI(LightningCLI):
    """LightningCLI for MOPO; see the module docstring. ``run`` is accepted for the callers' sake and ignored:
    parsing never trains; ``main`` calls ``fit``."""

    def __init__(self, args: Any = None, run: bool = False) -> None:
        super().__init__(
            SACModule,
            OfflineDataModule,
            auto_configure_optimizers=False,  # SAC optimises manually with its own three optimisers
            save_config_callback=None,  # the recipe writes <run_dir>/config.yaml when the run starts
            seed_everything_default=0,
            args=args,
            run=False,
            # exit_on_error=False: a parse error raises ArgumentError, which commands.cli.main prints as one line
            parser_kwargs={"description": "MOPO: model-based offline policy optimisation (Yu et al. 2020)",
                           "prog": "mopo-lightning fit", "exit_on_error": False},
        )

    # ------------------------------------------------------------------ config tree
    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        parser.add_argument("--ckpt_path", type=str | None, default=None,
                            help="resume the SAC stage: `last` (this run's newest checkpoint) or a checkpoint file")
        parser.add_argument("--run_name", type=str | None, default=None,
                            help="outputs go to <run_root>/<run_name>/ (default: <task>-<dataset>-s<seed>)")
        parser.add_argument("--run_root", type=str, default="checkpoints", help="parent of run directories")
        parser.add_argument("--method", type=str | None, default=None,
                            help="the method this run belongs to in reports, e.g. MOPO or MBPO (a sweep's arm); "
                                 "a label: it changes no setting")
        parser.add_argument("--stage", type=Literal["all", "dynamics"], default="all",
                            help="`dynamics` runs stage 1 alone and stops after saving dynamics.ckpt")
        parser.add_argument("--num_threads", type=int | Literal["auto"], default="auto",
                            help="torch CPU threads of every phase, or `auto`: each phase's measured best "
                                 "(machine.AUTO_THREADS), at most the CPUs this process may use and OMP_NUM_THREADS")
        for phase, what in THREAD_PHASES.items():
            parser.add_argument(f"--threads.{phase}", type=int | None, default=None,
                                help=f"torch CPU threads of {what} (default: --num_threads)")
        parser.add_argument("--overwrite", type=bool, default=False,
                            help="delete a run already in <run_root>/<run_name> and start fresh (never the default)")
        parser.add_argument("--checkpoint_every_n_epochs", type=int, default=1,
                            help="SAC checkpoint cadence; each holds the model buffer (~200 MB at h = 5)")
        parser.add_argument("--keep_checkpoints", type=int, default=2,
                            help="newest epoch checkpoints kept (a corrupt newest one falls back to the previous)")
        parser.add_argument("--dynamics_checkpoint", type=str | None, default=None,
                            help="load this dynamics.ckpt instead of <run_dir>/dynamics.ckpt")
        parser.add_argument("--dynamics_cache", type=str | None, default=None,
                            help="cache of trained ensembles keyed by their fingerprint, shared by runs "
                                 "(default <run_root>/.dynamics_cache)")
        parser.add_class_arguments(MOPOSettings, "mopo")
        parser.add_class_arguments(CollectIfMissing, "collect")
        parser.add_class_arguments(DynamicsModule, "dynamics", skip={"obs_dim", "act_dim"}, instantiate=False)
        parser.add_class_arguments(MuJoCoEvaluation, "evaluation", skip=EVALUATION_SKIP, instantiate=False)
        parser.add_class_arguments(PremiseMonitor, "premise", skip=PREMISE_SKIP, instantiate=False)
        # the data's own sizes (a Minari dataset's recorded spaces), once the data module exists
        parser.link_arguments("data", "model.obs_dim", compute_fn=lambda data: data.obs_dim, apply_on="instantiate")
        parser.link_arguments("data", "model.act_dim", compute_fn=lambda data: data.act_dim, apply_on="instantiate")
        parser.link_arguments("seed_everything", "data.seed")
        # SAC logs every n updates itself; Lightning must flush at the same period or it re-writes stale values.
        parser.link_arguments("trainer.log_every_n_steps", "model.log_every_n", compute_fn=_log_period)

    def parse_arguments(self, parser: LightningArgumentParser, args: Any) -> None:
        quiet_third_party()  # before LightningCLI seeds and builds anything
        if args is None or isinstance(args, list):
            check_renamed_keys(sys.argv[1:] if args is None else list(args))
        super().parse_arguments(parser, args)
        if self.config.get("ckpt_path") not in (None, "last"):
            check_checkpoint(self.config.ckpt_path)  # one line for a bad file, before any work

    def before_instantiate_classes(self) -> None:
        torch.set_num_threads(self.threads("sac"))  # outside the phases (the data, the checks) too: the smallest

    def instantiate_classes(self) -> None:
        """The config's objects without a Trainer: the recipe builds the SAC stage's Trainer once the
        callbacks that need the trained model can be made."""
        self.config_init = self.parser.instantiate(self.config)
        self.datamodule, self.model = self.config_init.data, self.config_init.model
        self.trainer = None

    # ------------------------------------------------------------------ the run
    def threads(self, phase: str) -> int:
        """Torch CPU threads of ``phase`` (``THREAD_PHASES``): ``--threads.<phase>``, else ``--num_threads``
        (``auto``: ``machine.auto_threads`` under ``machine.thread_cap``)."""
        return resolve_threads(phase, self.config.num_threads, self.config.get(f"threads.{phase}"))

    @property
    def run_dir(self) -> Path:
        name = self.config.run_name
        if not name:
            data = self.config.data
            source = Path(data.path).stem if data.path else data.dataset  # data.path wins, as in the data
            name = f"{data.task}-{source}-s{self.config.seed_everything}"
        return Path(self.config.run_root) / name

    def recipe_arguments(self) -> dict[str, Any]:
        """``recipe.train_mopo``'s arguments from this config."""
        cfg, init = self.config, self.config_init
        trainer = {k: v for k, v in init.trainer.items() if v is not None} if init.get("trainer") else {}
        for key in ("max_epochs", "max_steps"):
            if trainer.get(key) is not None and trainer[key] < -1:
                raise ConfigError(f"--trainer.{key} must be a positive number or -1 (no limit), got {trainer[key]}")
        time_limit(cfg.dynamics.max_time)
        if cfg.checkpoint_every_n_epochs < 1 or cfg.keep_checkpoints < 1:
            raise ConfigError(f"--checkpoint_every_n_epochs ({cfg.checkpoint_every_n_epochs}) and "
                              f"--keep_checkpoints ({cfg.keep_checkpoints}) must be >= 1")
        run = RunSettings(
            run_dir=self.run_dir, config=cfg.as_dict(), config_yaml=self.parser.dump(cfg, skip_none=False),
            stage=cfg.stage, method=cfg.method, seed=cfg.seed_everything, overwrite=cfg.overwrite,
            threads={phase: self.threads(phase) for phase in THREAD_PHASES},
            checkpoint_every_n_epochs=cfg.checkpoint_every_n_epochs, keep_checkpoints=cfg.keep_checkpoints,
            dynamics_checkpoint=cfg.dynamics_checkpoint,
            dynamics_cache=dynamics_cache_dir(cfg.run_root, cfg.dynamics_cache),
            log_every_n_steps=_log_period(trainer.get("log_every_n_steps")))
        return {"data": self.datamodule, "sac": self.model, "mopo": init.mopo, "dynamics": dict(cfg.dynamics),
                "run": run, "trainer": trainer, "evaluation": dict(cfg.evaluation), "premise": dict(cfg.premise),
                "collect": init.collect, "ckpt_path": cfg.ckpt_path}

    def fit(self) -> None:
        train_mopo(**self.recipe_arguments())


def main(args: list[str] | None = None) -> None:
    """``mopo-lightning fit [options]``; ``args`` may start with the word ``fit`` (``commands/cli.py`` passes it)."""
    args = list(sys.argv[1:] if args is None else args)
    with warnings.catch_warnings():  # args are passed explicitly even when they are sys.argv's
        warnings.filterwarnings("ignore", message="LightningCLI's args parameter is intended")
        MOPOCLI(args=args[1:] if args[:1] == ["fit"] else args).fit()
