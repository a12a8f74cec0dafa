"""D4RLDataModule: the link between the dynamics stage and the policy stage.

MOPO (Yu et al. 2020) follows MBPO (Janner et al. 2019) here: every ``rollout_freq`` SAC updates the
current stochastic actor is branched from ``rollout_batch_size`` real start states for h steps through
the uncertainty-penalised model, and the transitions go into a FIFO model buffer that keeps
``model_retain_epochs`` rollouts. Each SAC batch takes ``int(batch_size * real_ratio)`` real rows
(12 of 256, as the authors' ``int``) and the rest from the model buffer.

The DataModule owns the real transitions, the holdout split of stage 1, the model buffer and the
rollouts (style.md: what training cannot do without belongs to the module or the DataModule, not to a
callback). Under DDP each rank rolls out its own share of start states with its own seed.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import lightning as L
import torch
from tensordict import TensorDict
from torchrl.data import LazyTensorStorage, TensorDictReplayBuffer

from mopo_lightning.data.d4rl import load_dataset, resolve_dataset
from mopo_lightning.training.mixed_batches import MixedBatches
from mopo_lightning.guards import ConfigError, assert_finite
from mopo_lightning.tasks import Task, get_task

if TYPE_CHECKING:  # pragma: no cover
    from mopo_lightning.dynamics.ensemble import GaussianEnsemble

log = logging.getLogger(__name__)
logging.getLogger("torchrl").setLevel(logging.WARNING)

TRANSITION_KEYS = (
    "observation",
    "action",
    ("next", "observation"),
    ("next", "reward"),
    ("next", "terminated"),
    ("next", "truncated"),
    ("next", "done"),
)


class D4RLDataModule(L.LightningDataModule):
    """Real D4RL transitions, the stage-1 holdout split, the model buffer and mixed SAC batches."""

    def __init__(
        self,
        task: str,
        dataset: str | None = None,
        path: str | None = None,
        mode: Literal["transitions", "qlearning"] = "transitions",
        data_dir: str | None = None,
        collect_steps: int | None = None,
        collect_policy: str = "random",
        batch_size: int = 256,
        real_ratio: float = 0.05,
        rollout_length: int = 5,
        rollout_batch_size: int = 50_000,
        rollout_freq: int = 1000,
        model_retain_epochs: int = 5,
        updates_per_epoch: int = 1000,
        penalty_coef: float = 1.0,
        penalty: Literal["aleatoric", "disagreement"] = "aleatoric",
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
                (default ``$D4RL_DATASET_DIR`` or ``~/.d4rl/datasets``) and downloaded when missing.
            path: explicit D4RL-format HDF5 file; takes precedence over ``dataset``.
            mode: ``transitions`` (use ``next_observations``, keep timeouts as non-terminal) or
                ``qlearning`` (D4RL's ``qlearning_dataset``).
            data_dir: where D4RL files are looked up and downloaded.
            collect_steps: if set and ``path`` does not exist, collect that many steps in the real env
                with ``collect_policy`` first (the quickstart's self-made dataset).
            collect_policy: policy for ``collect_steps`` (``random``, ``falling``).
            batch_size: SAC batch size (MOPO: 256).
            real_ratio: fraction of each SAC batch drawn from the real data (MOPO: 0.05).
            rollout_length: model rollout horizon h (per task, MOPO reference section 4).
            rollout_batch_size: start states per rollout (MOPO: 50,000), split across ranks.
            rollout_freq: SAC updates between rollouts (MOPO: 1000).
            model_retain_epochs: rollouts the FIFO model buffer keeps (MOPO: 5).
            updates_per_epoch: SAC updates per Lightning epoch (MOPO: 1000); evaluation runs per epoch.
            penalty_coef: lambda of r - lambda * u (per task, reference section 4); 0 gives MBPO.
            penalty: ``aleatoric`` max_i ||sigma_i|| (MOPO) or ``disagreement`` of the member means.
            reward_mode: ``sample`` the chosen elite's reward (authors' code) or its ``mean`` (paper).
            holdout_ratio: stage-1 holdout fraction, capped at ``max_holdout`` rows.
            max_holdout: cap of the stage-1 holdout (MOPO: 1000).
            dynamics_batch_size: stage-1 batch size per member (MOPO: 256).
            seed: seeds the holdout split, the rollouts and the batch sampling.
        """
        super().__init__()
        self.save_hyperparameters()
        self.task_spec: Task = get_task(task)
        self.task = task
        if path is None and dataset is None:
            raise ConfigError("D4RLDataModule needs `data.path` (an HDF5 file) or `data.dataset` (a D4RL name)")
        if not 0.0 <= real_ratio <= 1.0:
            raise ConfigError(f"data.real_ratio must be in [0, 1], got {real_ratio}")
        for name in ("batch_size", "rollout_length", "rollout_batch_size", "rollout_freq", "model_retain_epochs",
                     "updates_per_epoch", "dynamics_batch_size"):
            if self.hparams[name] < 1:
                raise ConfigError(f"data.{name} must be at least 1, got {self.hparams[name]}")
        if penalty_coef < 0:
            raise ConfigError(f"data.penalty_coef (lambda) must be >= 0 (0 gives MBPO), got {penalty_coef}")
        self.real: TensorDict | None = None
        self.ensemble: GaussianEnsemble | None = None
        self.model_buffer: TensorDictReplayBuffer | None = None
        self.real_buffer: TensorDictReplayBuffer | None = None
        self.generator = torch.Generator()
        self._seeded_rank: int | None = None
        self.last_rollout_stats: dict[str, float] = {}

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
        """Resolve (and if configured, collect or download) the dataset file."""
        hp = self.hparams
        if hp.path is not None:
            path = Path(hp.path)
            if not path.exists() and hp.collect_steps:
                from mopo_lightning.collection.collect import collect

                log.info("collecting %d %s steps into %s", hp.collect_steps, hp.collect_policy, path)
                collect(self.task_spec, steps=hp.collect_steps, path=path, policy=hp.collect_policy, seed=hp.seed)
            return resolve_dataset(path)
        return resolve_dataset(hp.dataset, data_dir=hp.data_dir)

    def prepare_data(self) -> None:
        self.dataset_path()

    def setup(self, stage: str | None = None) -> None:
        if self.real is None:
            self.real = load_dataset(self.dataset_path(), self.task_spec, mode=self.hparams.mode)
        # Seeded per rank, once the rank is known (the CLI calls setup before the launcher has run):
        # every rank samples its own batches and rolls out from its own start states.
        if self._seeded_rank != self._rank():
            self._seeded_rank = self._rank()
            self.generator.manual_seed(self.hparams.seed + 7919 * self._seeded_rank)
            self.model_buffer = self.real_buffer = None  # sized for the rank's share of the rollouts

    def _has_trainer(self) -> bool:
        return getattr(self, "trainer", None) is not None and self.trainer.lightning_module is not None

    def _rank(self) -> int:
        trainer = getattr(self, "trainer", None)
        return trainer.global_rank if trainer is not None else 0

    def _world(self) -> int:
        trainer = getattr(self, "trainer", None)
        return trainer.world_size if trainer is not None else 1

    # ------------------------------------------------------------------ stage 1: the dynamics ensemble
    def dynamics_data(self, num_members: int):
        """Holdout split and per-member bootstrap batches of the real transitions (same on every rank)."""
        from mopo_lightning.dynamics.batches import dynamics_dataloaders

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
    def attach_dynamics(self, ensemble: GaussianEnsemble) -> None:
        """Switch to the policy stage: rollouts go through ``ensemble`` from now on."""
        self.ensemble = ensemble.eval()
        self.ensemble.requires_grad_(False)

    def _build_buffers(self) -> None:
        hp = self.hparams
        self.setup()
        real = self.real.select(*TRANSITION_KEYS)
        self.real_buffer = TensorDictReplayBuffer(
            storage=LazyTensorStorage(real.shape[0]), batch_size=self.n_real, generator=self.generator
        )
        self.real_buffer.extend(real)
        capacity = hp.model_retain_epochs * hp.rollout_length * self._rank_rollout_size()
        self.model_buffer = TensorDictReplayBuffer(
            storage=LazyTensorStorage(capacity),
            batch_size=hp.batch_size - self.n_real,
            generator=self.generator,
        )

    def _rank_rollout_size(self) -> int:
        """This rank's share of ``rollout_batch_size`` (the shares add up to it exactly)."""
        world, rank = self._world(), self._rank()
        total = self.hparams.rollout_batch_size
        return total // world + int(rank < total % world)

    @torch.no_grad()
    def rollout(self, policy, device: torch.device | str = "cpu") -> dict[str, float]:
        """Branch h-step rollouts of ``policy`` from real start states into the model buffer.

        Rows that terminate stop; their terminal transition is stored. Returns statistics to log.
        """
        from mopo_lightning.envs.model_env import PenalizedModelEnv
        from mopo_lightning.envs.rollout import branched_rollout

        if self.ensemble is None:
            raise RuntimeError("no dynamics attached: call attach_dynamics(ensemble) before the policy stage")
        if self.model_buffer is None:
            self._build_buffers()
        hp = self.hparams
        n = self._rank_rollout_size()
        start_idx = torch.randint(self.real.shape[0], (n,), generator=self.generator)
        env = PenalizedModelEnv(
            self.ensemble.to(device),
            self.task_spec.termination_fn,
            penalty_coef=hp.penalty_coef,
            batch_size=n,
            obs_dim=self.obs_dim,
            act_dim=self.act_dim,
            penalty=hp.penalty,
            reward_mode=hp.reward_mode,
            device=device,
            seed=int(torch.randint(2**31 - 1, (1,), generator=self.generator)),
        )
        data, diagnostics = branched_rollout(env, policy, self.real["observation"][start_idx].to(device),
                                             hp.rollout_length)
        data = data.cpu()
        updates = int(getattr(self.trainer.lightning_module, "sac_updates", 0)) if self._has_trainer() else 0
        assert_finite(
            {"model prediction (next observation)": data["next", "observation"],
             "model prediction (penalised reward)": data["next", "reward"]},
            f"in the model rollout before SAC update {updates}",
        )
        self.model_buffer.extend(data)
        pen, raw, rew = (diagnostics[k] for k in ("penalty", "raw_reward", "penalized_reward"))
        self.last_rollout_stats = {
            "rollout/start_states": float(n),
            "rollout/transitions": float(data.shape[0]),
            "rollout/termination_rate": float(data["next", "terminated"].sum()) / n,
            "rollout/raw_reward_mean": float(raw.mean()),
            "rollout/penalized_reward_mean": float(rew.mean()),
            "rollout/penalty_mean": float(pen.mean()),
            "rollout/penalty_max": float(pen.max()),
            "rollout/model_buffer_size": float(len(self.model_buffer)),
            "rollout/real_size": float(self.real.shape[0]),
        }
        self._rollout_tensors = {k: v.cpu() for k, v in diagnostics.items()}
        return self.last_rollout_stats

    def sample_batch(self) -> TensorDict:
        """One SAC batch: ``n_real`` real rows, the rest from the model buffer (real first)."""
        if self.model_buffer is None or len(self.model_buffer) == 0:
            raise RuntimeError("the model buffer is empty: roll out before sampling")
        parts = [self.model_buffer.sample()]
        if self.n_real:
            parts.insert(0, self.real_buffer.sample())
        return torch.cat(parts)

    # ------------------------------------------------------------------ checkpoint state
    def state_dict(self) -> dict:
        """The sampling generator and the model buffer's filled rows (not its whole capacity)."""
        state: dict = {"generator": self.generator.get_state()}
        if self.model_buffer is not None and len(self.model_buffer):
            n = len(self.model_buffer)
            state["model_buffer"] = self.model_buffer.storage[:n].to_dict()  # plain tensors: weights_only loads
            state["model_buffer_cursor"] = torch.tensor(self.model_buffer._writer._cursor)
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
            rows = TensorDict.from_dict(state_dict["model_buffer"], auto_batch_size=True, batch_dims=1)
            cursor = int(state_dict["model_buffer_cursor"])
            capacity = self.model_buffer.storage.max_size
            if rows.shape[0] <= capacity:  # same layout and cursor: sampling continues exactly
                self.model_buffer.extend(rows)
                self.model_buffer._writer._cursor = cursor
            else:  # e.g. a single-process checkpoint resumed on several ranks: keep the newest rows
                oldest_first = torch.cat([rows[cursor:], rows[:cursor]]) if cursor else rows
                log.warning("model buffer: keeping the newest %d of %d checkpointed rows (smaller "
                            "per-rank capacity)", capacity, rows.shape[0])
                self.model_buffer.extend(oldest_first[-capacity:])

    def train_dataloader(self) -> MixedBatches:
        if self.ensemble is None:
            raise RuntimeError("the policy stage needs a dynamics ensemble: call attach_dynamics() first")
        return MixedBatches(self)
