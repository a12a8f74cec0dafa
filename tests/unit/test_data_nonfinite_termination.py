"""Every task's termination function ends a row whose next observation holds NaN or inf anywhere.

Synthetic tensors: a healthy next state per task (termination False), then one entry made non-finite.
"""

from __future__ import annotations

import math

import pytest
import torch

from mopo_lightning.envs.tasks import TASKS


def _healthy(task) -> torch.Tensor:
    """A next observation the task's termination function calls healthy: height 1 (hopper, walker2d)
    or 0.5 (ant, inside [0.2, 1]), every other entry 0."""
    obs = torch.zeros(task.obs_dim)
    obs[0] = 0.5 if task.name.startswith("ant") else 1.0
    return obs


@pytest.mark.parametrize("name", sorted(TASKS))
@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf])
def test_non_finite_next_state_terminates(name, value):
    task = TASKS[name]
    healthy = _healthy(task)
    act = torch.zeros(task.act_dim)
    assert not task.termination_fn(healthy[None], act[None], healthy[None]).any()
    # one row per column made non-finite, plus one untouched row: [obs_dim + 1, obs_dim]
    next_obs = healthy.repeat(task.obs_dim + 1, 1)
    idx = torch.arange(task.obs_dim)
    next_obs[idx, idx] = value
    obs, actions = healthy.expand_as(next_obs), act.expand(task.obs_dim + 1, -1)
    done = task.termination_fn(obs, actions, next_obs)
    assert done.shape == (task.obs_dim + 1,) and done.dtype == torch.bool
    assert done[:-1].all(), f"{name}: columns {torch.flatnonzero(~done[:-1]).tolist()} stay alive at {value}"
    assert not done[-1]
    # batch dims beyond one: [2, 3, O]
    batched = next_obs[:6].reshape(2, 3, -1) if task.obs_dim >= 6 else None
    if batched is not None:
        assert task.termination_fn(batched, batched[..., :1], batched).all()
