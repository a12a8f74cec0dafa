"""Each task's termination function agrees with the real env's ``terminated`` on every transition.

The data come from the real MuJoCo envs under the "falling" policy (bang-bang actions), so that the
robots that can fall do so hundreds of times; HalfCheetah never terminates.
"""

from __future__ import annotations

import h5py
import numpy as np
import pytest
import torch

from mopo_lightning.envs.tasks import get_task

MIN_TERMINALS = {"hopper": 200, "walker2d": 200, "ant": 50, "halfcheetah": 0}


@pytest.mark.parametrize("name", ["hopper", "walker2d", "halfcheetah", "ant"])
def test_termination_fn_matches_env(name, dataset_factory):
    path = dataset_factory(name, 5_000, seed=0, policy="falling")
    with h5py.File(path, "r") as f:
        obs, act, next_obs = (
            torch.from_numpy(f[k][()]) for k in ("observations", "actions", "next_observations")
        )
        terminals = f["terminals"][()]
    assert obs.shape[0] >= 5_000
    predicted = get_task(name).termination_fn(obs, act, next_obs).numpy()
    assert predicted.shape == terminals.shape and predicted.dtype == np.bool_
    mismatched = np.flatnonzero(predicted != terminals)
    assert mismatched.size == 0, f"{name}: {mismatched.size} disagreements, first rows {mismatched[:10]}"
    if name == "halfcheetah":
        assert terminals.sum() == 0
    else:
        assert terminals.sum() >= MIN_TERMINALS[name], f"{name}: only {terminals.sum()} terminals"
