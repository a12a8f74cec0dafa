"""D4RLDataModule: the link between the dynamics stage and the policy stage.

MOPO (Yu et al. 2020) follows MBPO (Janner et al. 2019) here: every ``rollout_freq`` SAC updates the
current stochastic actor is branched from ``rollout_batch_size`` real start states for h steps through
the uncertainty-penalised model (``model_env.rollouts.ModelRollouts``, which owns the rollouts and the model
buffer). Each SAC batch takes ``int(batch_size * real_ratio)`` real rows (12 of 256, as the authors'
``int``) and the rest from the model buffer.

The DataModule owns the real transitions, the holdout split of stage 1 and the sampling generator, and
composes the rollouts (style.md: what training cannot do without belongs to the module or the
DataModule, not to a callback). The learner is handed to it explicitly (``bind_learner``), so the data
side never reaches into the trainer. Under DDP each rank samples and rolls out with its own seed.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Literal

import lightning as L
import torch
from tensordict import TensorDict

from mopo_lightning.data.d4rl import DatasetError
from mopo_lightning.data.dataset import OfflineDataset
from mopo_lightning.dynamics.batches import DynamicsData, dynamics_dataloaders
from mopo_lightning.model_env.env import EnsemblePredictor
from mopo_lightning.model_env.penalties import PenaltyKind, PenaltyScales, PenaltyUnits, coef_in_raw_units
from mopo_lightning.model_env.rollouts import ModelRollouts
from mopo_lightning.files import file_state
from mopo_lightning.guards import ConfigError
from mopo_lightning.tasks import Task
from mopo_lightning.training.mixed_batches import Learner, MixedBatches, MixedSampler, RolloutLog

log = logging.getLogger(__name__)


class D4RLDataModule(L.LightningDataModule):
    """Real D4RL transitions, the stage-1 holdout split, the model buffer and mixed SAC batches."""

    def __init__(
        self,
        task: str,
        dataset: str | None = None,
        path: str | None = None,
        mode: Literal["transitions", "qlearning"] = "transitions",
        data_dir: str | None = None,
        collect_path: str | None = None,
        collect_steps: int | None = None,
        collect_policy: str = "random",
        max_rows: int | None = None,
        batch_size: int = 256,
        real_ratio: float = 0.05,
        rollout_length: int = 5,
        rollout_batch_size: int = 50_000,
        rollout_freq: int = 1000,
        model_retain_epochs: int = 5,
        updates_per_epoch: int = 1000,
        penalty_coef: float = 1.0,
        penalty_kind: PenaltyKind = "aleatoric",
        penalty_units: PenaltyUnits = "raw",
        reward_mode: Literal["sample", "mean"] = "sample",
        holdout_ratio: float = 0.2,
        max_holdout: int = 1000,
        dynamics_batch_size: int = 256,
        seed: int = 0,
    ) -> None:
        """
        Args:
            task: task name (``hopper``, ``walker2d``, ``halfcheetah``, ``ant`` or a variant); sets sizes,
                termination and score normalisation.
            dataset: D4RL name such as ``walker2d-medium-replay-v2``, looked up in ``data_dir``
                (default ``$D4RL_DATASET_DIR`` or ``~/.d4rl/datasets``) and downloaded when missing; or a
                Minari id such as ``mujoco/hopper/medium-v0``, read from the local Minari store
                (``$MINARI_DATASETS_PATH`` or ``~/.minari/datasets``) or downloaded through Minari. The form
                decides (``data.source.dataset_source``). A Minari dataset brings its own env (id and kwargs
                from its recorded spec: evaluation runs there) and reference scores.
            path: explicit D4RL-format HDF5 file, or a Minari dataset directory; takes precedence over
                ``dataset``.
            mode: ``transitions`` (use ``next_observations``, keep timeouts as non-terminal) or
                ``qlearning`` (D4RL's ``qlearning_dataset``).
            data_dir: where D4RL files are looked up and downloaded.
            collect_path: the one file a missing dataset may be collected into (the quickstart's
                self-made dataset): when ``path`` does not exist and is this file, ``collect_steps`` steps
                are collected there first. Any other missing ``path`` is an error, so a mistyped
                ``--data.path`` never collects into the typo.
            collect_steps: steps to collect into ``collect_path`` (with ``collect_policy``) when missing.
            collect_policy: policy for ``collect_steps`` (``random``, ``falling``).
            max_rows: keep only the LAST ``max_rows`` loaded transitions (after ``mode``'s row selection),
                as the authors' replay pool (``max_size`` 1e6) keeps the last 1M rows of a file, which
                decides what their medium-expert runs trained on. The stage-1 holdout, the bootstrap
                batches, the rollout start states and the real part of SAC batches all come from the
                kept rows. ``None`` (default) keeps every row.
            batch_size: SAC batch size (MOPO: 256).
            real_ratio: fraction of each SAC batch drawn from the real data (MOPO: 0.05).
            rollout_length: model rollout horizon h (per task, MOPO reference section 4).
            rollout_batch_size: start states per rollout (MOPO: 50,000), split across ranks.
            rollout_freq: SAC updates between rollouts (MOPO: 1000).
            model_retain_epochs: epochs of rollouts the FIFO model buffer keeps (MOPO: 5), i.e.
                ``model_retain_epochs * ceil(updates_per_epoch / rollout_freq)`` rollouts, as the authors'
                pool (``model_env.rollouts``).
            updates_per_epoch: SAC updates per Lightning epoch (MOPO: 1000); evaluation runs per epoch.
            penalty_coef: lambda of r - lambda * u (per task, reference section 4); 0 gives MBPO.
            penalty_kind: u by name (``model_env/penalties.py``): ``aleatoric`` max_i ||sigma_i|| (MOPO), the
                authors' ``disagreement``, or Lu et al.'s ``max_pairwise_diff``, ``ensemble_std``, ``ensemble_var``,
                ``llv``, ``loo_kl``.
            penalty_units: ``raw`` (the paper's lambda) or lambda in units of the kind's ``mean`` or ``p95`` on the
                data, measured with the model: lambda / that scale then weighs the raw u.
            reward_mode: ``sample`` the chosen elite's reward (authors' code) or its ``mean`` (paper).
            holdout_ratio: stage-1 holdout fraction, capped at ``max_holdout`` rows.
            max_holdout: cap of the stage-1 holdout (MOPO: 1000).
            dynamics_batch_size: stage-1 batch size per member (MOPO: 256).
            seed: seeds the holdout split, the rollouts and the batch sampling.
        """
        super().__init__()
        self.save_hyperparameters()
        self.task = task
        self.data = OfflineDataset(task, dataset, path, mode, data_dir, max_rows)
        """The dataset this run names: its source, its task and score reference, its rows (``data/``)."""
        if not 0.0 <= real_ratio <= 1.0:
            raise ConfigError(f"data.real_ratio must be in [0, 1], got {real_ratio}")
        for name in ("batch_size", "rollout_length", "rollout_batch_size", "rollout_freq", "model_retain_epochs",
                     "updates_per_epoch", "dynamics_batch_size"):
            if self.hparams[name] < 1:
                raise ConfigError(f"data.{name} must be at least 1, got {self.hparams[name]}")
        if penalty_coef < 0:
            raise ConfigError(f"data.penalty_coef (lambda) must be >= 0 (0 gives MBPO), got {penalty_coef}")
        self.real: TensorDict | None = None
        self.loaded_file_state: tuple | None = None
        self.ensemble: EnsemblePredictor | None = None
        self.penalty_scales: PenaltyScales | None = None  # each kind's scale on the data, from the model
        self.rollouts: ModelRollouts | None = None
        self.sampler: MixedSampler | None = None
        self.generator = torch.Generator()
        self._seeded_rank: int | None = None
        self._learner: Learner | None = None
        self._rollout_log: RolloutLog | None = None
        self.rollout_threads: int | None = None
        """Torch CPU threads of the model rollouts (None: the SAC update's); set by ``fit`` (--threads.rollout)."""

    # ------------------------------------------------------------------ the task: the data's own env and scores
    @property
    def task_spec(self) -> Task:
        """The task the run trains and evaluates on: the registry's, or a Minari dataset's own."""
        return self.data.task

    @property
    def source(self) -> str:
        return self.data.source

    @property
    def score_reference(self) -> str:
        """Which reference returns normalise scores: ``D4RL``, ``minari:<id>`` or ``none`` (scores null)."""
        return self.data.score_reference

    # ------------------------------------------------------------------ sizes, linked into the modules
    @property
    def obs_dim(self) -> int:
        return self.task_spec.obs_dim

    @property
    def act_dim(self) -> int:
        return self.task_spec.act_dim

    @property
    def n_real(self) -> int:
        return int(self.hparams.batch_size * self.hparams.real_ratio)

    # ------------------------------------------------------------------ data
    def dataset_path(self) -> Path:
        """The data file, collected first when it is missing and it is the config's ``data.collect_path``."""
        hp = self.hparams
        if self.source != "minari" and hp.path is not None and not Path(hp.path).expanduser().exists():
            path = Path(hp.path).expanduser()
            collect_path = hp.collect_path and Path(hp.collect_path).expanduser().resolve()
            if not (hp.collect_steps and path.resolve() == collect_path):
                hint = f" (only data.collect_path {hp.collect_path} is collected when missing)" \
                    if hp.collect_steps and hp.collect_path else ""
                raise DatasetError(f"{path}: no such file{hint}")
            from mopo_lightning.collection.collect import collect

            message = (f"collecting {hp.collect_steps} {hp.collect_policy}-policy {self.task_spec.name} "
                       f"steps into {path} (data.collect_path)")
            print(f"mopo-lightning: {message}", flush=True)
            log.info(message)
            collect(self.task_spec, steps=hp.collect_steps, path=path, policy=hp.collect_policy, seed=hp.seed)
        return self.data.file()

    def prepare_data(self) -> None:
        self.dataset_path()

    def setup(self, stage: str | None = None) -> None:
        if self.real is None:
            before = file_state(self.dataset_path())  # collected first where the config says so
            self.real = self.data.load()
            if file_state(before[0]) != before:
                raise DatasetError(f"{before[0]} changed while this run read it; another process wrote or "
                                   "replaced it: run again once the file stays put")
            self.loaded_file_state = before  # stage 1 hashes these bytes (dynamics.fingerprint.dataset_sha256)
        # Seeded per rank, once the rank is known (the CLI calls setup before the launcher has run):
        # every rank samples its own batches and rolls out from its own start states.
        if self._seeded_rank != self._rank():
            self._seeded_rank = self._rank()
            self.generator.manual_seed(self.hparams.seed + 7919 * self._seeded_rank)
            self.rollouts = self.sampler = None  # sized for the rank's share of the rollouts

    def _rank(self) -> int:
        trainer = getattr(self, "trainer", None)
        return trainer.global_rank if trainer is not None else 0

    def _world(self) -> int:
        trainer = getattr(self, "trainer", None)
        return trainer.world_size if trainer is not None else 1

    # ------------------------------------------------------------------ stage 1: the dynamics ensemble
    def dynamics_data(self, num_members: int) -> DynamicsData:
        """Holdout split and per-member bootstrap batches of the real transitions (same on every rank)."""
        self.setup()
        hp = self.hparams
        return dynamics_dataloaders(
            self.real,
            num_members=num_members,
            batch_size=hp.dynamics_batch_size,
            holdout_ratio=hp.holdout_ratio,
            max_holdout=hp.max_holdout,
            seed=hp.seed,
        )

    # ------------------------------------------------------------------ stage 2: model rollouts and mixed batches
    def attach_dynamics(self, ensemble: EnsemblePredictor, penalty_scales: PenaltyScales | None = None) -> None:
        """Switch to the policy stage: rollouts go through ``ensemble`` (``penalty_scales``: its penalty kinds'
        scales on the data, ``model_env.penalties.measure_scales``) from now on."""
        self.penalty_scales = penalty_scales
        coef = self.penalty_coef  # a scale that penalty_units needs and the model lacks fails here
        self.ensemble = ensemble.eval()
        self.ensemble.requires_grad_(False)
        if self.rollouts is not None:
            self.rollouts.attach(self.ensemble)
            self.rollouts.penalty_coef = coef

    def bind_learner(self, learner: Learner, log: RolloutLog | None = None) -> None:
        """The learner whose policy is rolled out and whose update count drives the schedule."""
        self._learner, self._rollout_log = learner, log

    @property
    def penalty_coef(self) -> float:
        """lambda applied to the raw u: ``penalty_coef``, divided by the kind's scale unless the units are raw."""
        hp = self.hparams
        return coef_in_raw_units(hp.penalty_coef, hp.penalty_kind, hp.penalty_units, self.penalty_scales)

    def _build_buffers(self) -> None:
        hp = self.hparams
        self.setup()
        self.rollouts = ModelRollouts(
            self.real["observation"],
            self.task_spec.termination_fn,
            self.act_dim,
            rollout_length=hp.rollout_length,
            rollout_batch_size=hp.rollout_batch_size,
            rollout_freq=hp.rollout_freq,
            model_retain_epochs=hp.model_retain_epochs,
            penalty_coef=self.penalty_coef,
            penalty_kind=hp.penalty_kind,
            reward_mode=hp.reward_mode,
            sample_size=hp.batch_size - self.n_real,
            generator=self.generator,
            rank=self._rank(),
            world_size=self._world(),
            updates_per_epoch=hp.updates_per_epoch,
        )
        if self.ensemble is not None:
            self.rollouts.attach(self.ensemble)
        self.sampler = MixedSampler(self.real, self.rollouts, self.n_real, self.generator)

    def model_rollouts(self) -> ModelRollouts:
        """The rollout owner, built for this rank on first use."""
        if self.rollouts is None:
            self._build_buffers()
        return self.rollouts

    def sample_batch(self) -> TensorDict:
        """One SAC batch: ``n_real`` real rows, the rest from the model buffer (``MixedSampler``)."""
        self.model_rollouts()
        return self.sampler()

    # ------------------------------------------------------------------ checkpoint state
    def state_dict(self) -> dict:
        """The sampling generator and the model buffer's filled rows (not its whole capacity)."""
        state: dict = {"generator": self.generator.get_state()}
        if self.rollouts is not None:
            state.update(self.rollouts.state_dict())
        return state

    def load_state_dict(self, state_dict: dict) -> None:
        self.setup()
        self.generator.set_state(state_dict["generator"])
        if self._world() > 1:
            # Only rank 0's state is checkpointed: derive a distinct stream per rank from it, so the
            # ranks keep sampling different batches and start states after a resume.
            seed = int(torch.randint(2**62, (1,), generator=self.generator)) + 7919 * self._rank()
            self.generator.manual_seed(seed)
        if "model_buffer" in state_dict:
            self._build_buffers()
            self.rollouts.load_state_dict(state_dict)

    def transfer_batch_to_device(self, batch: TensorDict, device: torch.device, dataloader_idx: int) -> TensorDict:
        """Batches are built on the CPU: a CPU run takes them as they are (Lightning's default walks every
        leaf of the TensorDict: ~1% of a SAC update in the loop); elsewhere one non-blocking ``to``."""
        if device.type == "cpu":
            return batch
        return batch.to(device, non_blocking=True)

    def train_dataloader(self) -> MixedBatches:
        if self.ensemble is None:
            raise RuntimeError("the policy stage needs a dynamics ensemble: call attach_dynamics() first")
        if self._learner is None:
            raise RuntimeError("the policy stage needs a learner: call bind_learner(sac_module) first")
        return MixedBatches(self.model_rollouts(), self.sample_batch, self._learner,
                            self.hparams.updates_per_epoch, log=self._rollout_log,
                            rollout_threads=self.rollout_threads)
