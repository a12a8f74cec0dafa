"""OfflineDataModule: the run's real transitions, loaded and validated once, and stage 1's split of them.

It loads, validates and hands out; it collects nothing (``collection/missing.py`` makes a missing
quickstart file first) and it mixes nothing: after stage 1 the recipe builds the policy stage's
``training.mixed_data.MixedDataModule`` from these rows, the model MDP and the learner.
"""

from __future__ import annotations

from typing import Literal

import lightning as L
from tensordict import TensorDict

from mopo_lightning.data.dataset import OfflineDataset
from mopo_lightning.data.errors import DatasetError
from mopo_lightning.dynamics.batches import DynamicsData, dynamics_dataloaders
from mopo_lightning.envs.tasks import Task
from mopo_lightning.files import file_state
from mopo_lightning.guards import ConfigError


class OfflineDataModule(L.LightningDataModule):
    """Real transitions (D4RL files, D4RL names, Minari ids), the stage-1 holdout split, and SAC batch sizes."""

    def __init__(
        self,
        task: str,
        dataset: str | None = None,
        path: str | None = None,
        mode: Literal["transitions", "qlearning"] = "transitions",
        data_dir: str | None = None,
        max_rows: int | None = None,
        batch_size: int = 256,
        updates_per_epoch: int = 1000,
        holdout_ratio: float = 0.2,
        max_holdout: int = 1000,
        dynamics_batch_size: int = 256,
        seed: int = 0,
    ) -> None:
        """
        Args:
            task: task name (``hopper``, ``walker2d``, ``halfcheetah``, ``ant`` or a variant); sets termination
                and score normalisation (a Minari dataset brings its own env and reference scores).
            dataset: D4RL name such as ``walker2d-medium-replay-v2``, looked up in ``data_dir``
                (default ``$D4RL_DATASET_DIR`` or ``~/.d4rl/datasets``) and downloaded when missing; or a
                Minari id such as ``mujoco/hopper/medium-v0``, read from the local Minari store
                (``$MINARI_DATASETS_PATH`` or ``~/.minari/datasets``) or downloaded through Minari.
            path: explicit D4RL-format HDF5 file, or a Minari dataset directory; takes precedence over ``dataset``.
            mode: ``transitions`` (use ``next_observations``, keep timeouts as non-terminal) or
                ``qlearning`` (D4RL's ``qlearning_dataset``).
            data_dir: where D4RL files are looked up and downloaded.
            max_rows: keep only the LAST ``max_rows`` loaded transitions, as the authors' replay pool (``max_size``
                1e6) keeps the last 1M rows of a file. ``None`` (default) keeps every row.
            batch_size: SAC batch size (MOPO: 256), real and model rows together.
            updates_per_epoch: SAC updates (batches) per Lightning epoch (MOPO: 1000); evaluation runs per epoch.
            holdout_ratio: stage-1 holdout fraction, capped at ``max_holdout`` rows.
            max_holdout: cap of the stage-1 holdout (MOPO: 1000).
            dynamics_batch_size: stage-1 batch size per member (MOPO: 256).
            seed: seeds the holdout split, the rollouts and the batch sampling.
        """
        super().__init__()
        self.save_hyperparameters()
        for name in ("batch_size", "updates_per_epoch", "dynamics_batch_size"):
            if self.hparams[name] < 1:
                raise ConfigError(f"data.{name} must be at least 1, got {self.hparams[name]}")
        self.data = OfflineDataset(task, dataset, path, mode, data_dir, max_rows)
        """The dataset this run names: its source, its task and score reference, its rows (``data/``)."""
        self.real: TensorDict | None = None
        self.loaded_file_state: tuple | None = None

    @property
    def task_spec(self) -> Task:
        """The task the run trains and evaluates on: the registry's, or a Minari dataset's own."""
        return self.data.task

    @property
    def score_reference(self) -> str:
        """Which reference returns normalise scores: ``D4RL``, ``minari:<id>`` or ``none`` (scores null)."""
        return self.data.score_reference

    @property
    def obs_dim(self) -> int:
        """The data's own observation size, which sizes every model: a Minari dataset's recorded space (its env
        kwargs may change the registry's size); a D4RL file's rows are refused unless they have its task's."""
        return self.task_spec.obs_dim

    @property
    def act_dim(self) -> int:
        return self.task_spec.act_dim

    def setup(self, stage: str | None = None) -> None:
        self.rows()

    def rows(self) -> TensorDict:
        """The real transitions, read and validated once; a file written while it is read is refused."""
        if self.real is None:
            before = file_state(self.data.file())
            self.real = self.data.load()
            if file_state(before[0]) != before:
                raise DatasetError(f"{before[0]} changed while this run read it; another process wrote or "
                                   "replaced it: run again once the file stays put")
            self.loaded_file_state = before  # stage 1 hashes these bytes (dynamics.fingerprint.dataset_sha256)
        return self.real

    def dynamics_data(self, num_members: int) -> DynamicsData:
        """Holdout split and per-member bootstrap batches of the real transitions (same on every rank)."""
        hp = self.hparams
        return dynamics_dataloaders(self.rows(), num_members=num_members, batch_size=hp.dynamics_batch_size,
                                    holdout_ratio=hp.holdout_ratio, max_holdout=hp.max_holdout, seed=hp.seed)
