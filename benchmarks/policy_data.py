"""The policy stage's data as the recipe builds it, for benchmarks that time its parts one by one."""

from __future__ import annotations

from mopo_lightning.model_env.env import EnsemblePredictor
from mopo_lightning.model_env.settings import MOPOSettings
from mopo_lightning.training.datamodule import OfflineDataModule
from mopo_lightning.training.mixed_batches import Learner
from mopo_lightning.training.mixed_data import MixedDataModule


def policy_data(data: OfflineDataModule, ensemble: EnsemblePredictor, learner: Learner,
                **mopo: object) -> MixedDataModule:
    """``data``'s rows mixed with ``learner``'s rollouts through ``ensemble``; ``mopo``: ``MOPOSettings``
    fields (lambda taken as already in the raw penalty's units). ``.rollouts.rollout(policy)`` rolls out,
    ``.sampler()`` draws one SAC batch."""
    settings = MOPOSettings(**mopo)
    mixed = data.policy_stage(ensemble, settings, settings.penalty_coef, learner)
    mixed.setup("fit")
    return mixed
