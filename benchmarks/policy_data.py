"""The policy stage's data as the recipe builds it, for benchmarks that time its parts one by one."""

from __future__ import annotations

from mopo_lightning.model_env.env import EnsemblePredictor
from mopo_lightning.model_env.mdp import ModelMDP
from mopo_lightning.model_env.settings import MOPOSettings
from mopo_lightning.training.datamodule import OfflineDataModule
from mopo_lightning.training.mixed_batches import Learner
from mopo_lightning.training.mixed_data import MixedDataModule


def policy_data(data: OfflineDataModule, ensemble: EnsemblePredictor, learner: Learner,
                **mopo: object) -> MixedDataModule:
    """``data``'s rows mixed with ``learner``'s rollouts through ``ensemble``; ``mopo``: ``MOPOSettings``
    fields (``penalty_units`` raw: no penalty scales needed). ``.rollouts.rollout(policy)`` rolls out,
    ``.sampler()`` draws one SAC batch."""
    settings, hp = MOPOSettings(**mopo), data.hparams
    mdp = ModelMDP.from_settings(settings, None, data.task_spec)
    mixed = MixedDataModule(data.rows(), data.task_spec, ensemble, mdp, settings, learner, batch_size=hp.batch_size,
                            updates_per_epoch=hp.updates_per_epoch, seed=hp.seed)
    mixed.setup("fit")
    return mixed
