"""The policy stage's training batches: rollouts on schedule, then mixed real/model samples."""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

from tensordict import TensorDict

if TYPE_CHECKING:  # pragma: no cover
    from mopo_lightning.training.datamodule import D4RLDataModule


class MixedBatches:
    """One epoch of SAC batches; rolls the current actor out every ``rollout_freq`` batches.

    The counter starts from the module's ``sac_updates``, so a resumed run rolls out on the same
    schedule. Lightning fetches one batch ahead, so the rolled-out actor may be one update older.
    """

    def __init__(self, datamodule: D4RLDataModule) -> None:
        self.dm = datamodule

    def __len__(self) -> int:
        return self.dm.hparams.updates_per_epoch

    def __iter__(self) -> Iterator[TensorDict]:
        dm = self.dm
        module = dm.trainer.lightning_module
        updates = int(module.sac_updates)
        freq = dm.hparams.rollout_freq
        for _ in range(len(self)):
            if updates % freq == 0 or dm.model_buffer is None or len(dm.model_buffer) == 0:
                stats = dm.rollout(module.policy_module(), device=module.device)
                logger = dm.trainer.logger
                if logger is not None:
                    logger.log_metrics(stats, step=updates)
                    experiment = getattr(logger, "experiment", None)
                    if hasattr(experiment, "add_histogram"):
                        for name, values in dm._rollout_tensors.items():
                            experiment.add_histogram(f"rollout/{name}", values, updates)
            yield dm.sample_batch()
            updates += 1
