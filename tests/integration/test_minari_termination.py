"""Each v5 task's termination function agrees with the real gymnasium v5 env on every collected transition.

The transitions are real Minari datasets (the "falling" policy, so that the robots that can fall do so
hundreds of times); the check runs both the registry's v5 task and the task the dataset's recorded spec
defines (``OfflineDataModule.task_spec``), on the loaded transitions. HalfCheetah never terminates.
"""

from __future__ import annotations

import numpy as np
import pytest

from mopo_lightning.envs.tasks import get_task
from mopo_lightning.training.datamodule import OfflineDataModule

MIN_TERMINALS = {"hopper-v5": 200, "walker2d-v5": 200, "ant-v5": 50, "halfcheetah-v5": 0}


@pytest.mark.parametrize("name", ["hopper-v5", "walker2d-v5", "halfcheetah-v5", "ant-v5"])
def test_v5_termination_fn_matches_env(name, minari_factory):
    dataset_id = minari_factory(name, 5_000, seed=0, policy="falling")
    dm = OfflineDataModule(task=name, dataset=dataset_id)
    dm.setup()
    real = dm.real
    terminated = real["next", "terminated"][:, 0].numpy()
    assert real.shape[0] == 5_000 and real["observation"].shape[1] == get_task(name).obs_dim
    for task in (get_task(name), dm.task_spec):
        predicted = task.termination_fn(real["observation"], real["action"], real["next", "observation"]).numpy()
        assert predicted.shape == terminated.shape and predicted.dtype == np.bool_
        mismatched = np.flatnonzero(predicted != terminated)
        assert mismatched.size == 0, f"{name}: {mismatched.size} disagreements, first rows {mismatched[:10]}"
    if name == "halfcheetah-v5":
        assert terminated.sum() == 0
    else:
        assert terminated.sum() >= MIN_TERMINALS[name], f"{name}: only {terminated.sum()} terminations"
