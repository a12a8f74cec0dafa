"""``evaluate_policy`` in the real MuJoCo env: the same episodes as a plain one-env loop, no physics thrown away."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mopo_lightning.callbacks import evaluation
from mopo_lightning.callbacks.evaluation import evaluate_policy
from mopo_lightning.diagnostics.premise import EPISODE
from mopo_lightning.envs.tasks import get_task
from mopo_lightning.envs.wrappers import make_env
from mopo_lightning.policy.sac import SACModule

TASK, SEED, IDS = "hopper", 11, [0, 1, 2, 4, 5]  # an untrained Hopper falls after ~70 steps, at different steps


@pytest.fixture(scope="module")
def act():
    task = get_task(TASK)
    torch.manual_seed(0)
    policy = SACModule(task.obs_dim, task.act_dim)
    return lambda obs: policy.act(obs, deterministic=True)


def reference_episode(act, episode: int, batch: int) -> tuple[float, int, list[np.ndarray]]:
    """One episode alone, in its own env, with the policy batch shape ``evaluate_policy`` uses (row ``episode``)."""
    env = make_env(TASK)
    obs, _ = env.reset(seed=SEED + episode)
    full = torch.zeros(batch, get_task(TASK).obs_dim)
    total, length, observations, done = 0.0, 0, [], False
    while not done:
        full[episode] = torch.as_tensor(obs, dtype=torch.float32)
        observations.append(obs)
        obs, reward, terminated, truncated, _ = env.step(act(full)[episode].numpy())
        total, length, done = total + reward, length + 1, terminated or truncated
    env.close()
    return total, length, observations


def test_episodes_match_a_plain_loop_and_finished_episodes_are_not_stepped(act, monkeypatch):
    steps = {"n": 0}
    real_make_env = evaluation.make_env

    def counting_make_env(*args, **kwargs):
        env = real_make_env(*args, **kwargs)
        step = env.step

        def counted(action):
            steps["n"] += 1
            return step(action)

        env.step = counted
        return env

    monkeypatch.setattr(evaluation, "make_env", counting_make_env)
    result = evaluate_policy(TASK, act, IDS, seed=SEED, record=True)
    batch = max(IDS) + 1
    for row, episode in enumerate(IDS):
        total, length, observations = reference_episode(act, episode, batch)
        assert result.lengths[row] == length and result.returns[row] == total
        recorded = result.transitions["observation"][result.transitions[EPISODE] == episode]
        assert torch.equal(recorded, torch.as_tensor(np.stack(observations), dtype=torch.float32))
    assert len(set(result.lengths.tolist())) > 1  # the episodes end at different steps...
    assert steps["n"] == int(result.lengths.sum())  # ...and none is stepped after its end
    assert result.transitions.shape[0] == int(result.lengths.sum())
