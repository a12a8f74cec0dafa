"""MixedDataModule: the policy stage's data, MOPO's mix of real rows and model rollouts.

MOPO (Yu et al. 2020) follows MBPO (Janner et al. 2019) here: every ``mopo.rollout_freq`` SAC updates the
current stochastic actor is branched from ``mopo.rollout_batch_size`` real start states for h steps through
the uncertainty-penalised model MDP (``model_env.mdp.ModelMDP``; ``model_env.rollouts.ModelRollouts`` owns the
rollouts and the model buffer). Each SAC batch takes ``int(batch_size * real_ratio)`` real rows (12 of 256, as the
authors' ``int``) and the rest from the model buffer.

Every collaborator is handed to the constructor (by the recipe, once stage 1 is done), so nothing is attached
later. The rollouts are built in ``setup``, once the rank is
known: under DDP each rank samples and rolls out its own share with its own seed.
"""

from __future__ import annotations

import lightning as L
import torch
from tensordict import TensorDict

from mopo_lightning.envs.tasks import Task
from mopo_lightning.model_env.env import EnsemblePredictor
from mopo_lightning.model_env.mdp import ModelMDP
from mopo_lightning.model_env.rollouts import ModelRollouts, RolloutSchedule
from mopo_lightning.model_env.settings import MOPOSettings
from mopo_lightning.training.mixed_batches import Learner, MixedBatches, MixedSampler, RolloutLog
from mopo_lightning.transitions import OBSERVATION

RANK_SEED_STRIDE = 7919  # rank r samples with seed + 7919 r: distinct streams, the same on every restart


class MixedDataModule(L.LightningDataModule):
    """SAC batches of real and model rows, with rollouts of the learner's policy on MOPO's schedule."""

    def __init__(self, real: TensorDict, task: Task, ensemble: EnsemblePredictor, mdp: ModelMDP, mopo: MOPOSettings,
                 learner: Learner, *, batch_size: int, updates_per_epoch: int, seed: int,
                 log: RolloutLog | None = None, rollout_threads: int | None = None) -> None:
        """
        Args:
            real: the real transitions (``OfflineDataModule.rows``).
            task: the task (its action size).
            ensemble: stage 1's model (frozen here).
            mdp: the penalised model MDP the rollouts step (``ModelMDP.from_settings``).
            mopo: the rollout schedule, the model buffer and the real ratio.
            learner: whose current policy is rolled out and whose update count drives the schedule.
            batch_size, updates_per_epoch, seed: the ``data`` group's settings.
            log: receives each rollout's statistics (e.g. ``tensorboard_rollout_log``).
            rollout_threads: torch CPU threads of the rollouts (None: the SAC update's).
        """
        super().__init__()
        self.real, self.task, self.mdp, self.mopo, self.learner, self.log = real, task, mdp, mopo, learner, log
        self.ensemble = ensemble.eval().requires_grad_(False)
        self.rollout_threads = rollout_threads
        self.batch_size, self.updates_per_epoch, self.seed = batch_size, updates_per_epoch, seed
        self.n_real = mopo.real_rows(batch_size)
        self.generator = torch.Generator()
        self.rollouts: ModelRollouts | None = None
        self.sampler: MixedSampler | None = None
        self._rank: int | None = None

    def _rank_and_world(self) -> tuple[int, int]:
        trainer = self.trainer
        return (trainer.global_rank, trainer.world_size) if trainer is not None else (0, 1)

    def setup(self, stage: str | None = None) -> None:
        """Seed this rank's stream and build its share of the rollouts (a new rank rebuilds them)."""
        rank, world = self._rank_and_world()
        if self._rank == rank:
            return
        self._rank = rank
        self.generator.manual_seed(self.seed + RANK_SEED_STRIDE * rank)
        self.rollouts = ModelRollouts(
            self.real[OBSERVATION], self.task.act_dim, self.mdp,
            RolloutSchedule.from_settings(self.mopo, self.updates_per_epoch),
            sample_size=self.batch_size - self.n_real, generator=self.generator, rank=rank, world_size=world)
        self.rollouts.attach(self.ensemble)
        self.sampler = MixedSampler(self.real, self.rollouts, self.n_real, self.generator)

    def train_dataloader(self) -> MixedBatches:
        self.setup()
        return MixedBatches(self.rollouts, self.sampler, self.learner, self.updates_per_epoch, log=self.log,
                            rollout_threads=self.rollout_threads)

    def state_dict(self) -> dict:
        """The sampling generator and the model buffer's filled rows (not its whole capacity)."""
        state: dict = {"generator": self.generator.get_state()}
        if self.rollouts is not None:
            state.update(self.rollouts.state_dict())
        return state

    def load_state_dict(self, state_dict: dict) -> None:
        self.setup()
        self.generator.set_state(state_dict["generator"])
        rank, world = self._rank_and_world()
        if world > 1:
            # Only rank 0's state is checkpointed: derive a distinct stream per rank from it, so the
            # ranks keep sampling different batches and start states after a resume.
            seed = int(torch.randint(2**62, (1,), generator=self.generator)) + RANK_SEED_STRIDE * rank
            self.generator.manual_seed(seed)
        if "model_buffer" in state_dict:
            self.rollouts.load_state_dict(state_dict)

    def transfer_batch_to_device(self, batch: TensorDict, device: torch.device, dataloader_idx: int) -> TensorDict:
        """Batches are built on the CPU: a CPU run takes them as they are (Lightning's default walks every
        leaf of the TensorDict: ~1% of a SAC update in the loop); elsewhere one non-blocking ``to``."""
        if device.type == "cpu":
            return batch
        return batch.to(device, non_blocking=True)
