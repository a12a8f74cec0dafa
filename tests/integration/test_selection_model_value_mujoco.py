"""The model-based value estimate on real MuJoCo data: a tiny ensemble trained on random Hopper steps.

One ensemble (5 members of 2 x 64, 3 elites, 1,500 Adam steps on the ~2,000 collected random-policy steps of
``hopper_small``) is trained once for the module; the policy is a fixed random linear map (deterministic). The
estimate rolls out from the data's own episode starts to the 1000-step horizon, and never builds a real env; the
policy's real return (10 real episodes, measured before ``gymnasium.make`` is refused) is the truth it is held to.

Mutations of model_value.py each test was checked to catch: the termination ignored (every row runs 1000 steps):
test_estimate_on_real_data; the generator unseeded: test_seeded_modes_repeat (both modes); the model's delta not
added to s: test_estimate_on_real_data and test_seeded_modes_repeat[sample].
"""

from __future__ import annotations

import math

import gymnasium
import pytest
import torch
from conftest import train_tiny_ensemble

from mopo_lightning.callbacks.evaluation import evaluate_policy
from mopo_lightning.data.d4rl import load_dataset
from mopo_lightning.envs.tasks import get_task
from mopo_lightning.model_env.mdp import ModelMDP
from mopo_lightning.selection.fqe import episode_starts, start_states
from mopo_lightning.selection.model_value import ModelValueConfig, model_value
from mopo_lightning.transitions import REWARD

TASK = get_task("hopper")
WEIGHTS = torch.randn(TASK.obs_dim, TASK.act_dim, generator=torch.Generator().manual_seed(1)) * 0.3


def policy(obs: torch.Tensor) -> torch.Tensor:
    """A fixed random linear policy, deterministic."""
    return torch.tanh(obs @ WEIGHTS)


@pytest.fixture(scope="module")
def data(hopper_small):
    return load_dataset(hopper_small, "hopper")


@pytest.fixture(scope="module")
def ensemble(data):
    return train_tiny_ensemble(data, TASK, iters=1500, holdout=300)


@pytest.fixture(scope="module")
def real_return() -> float:
    """The policy's mean return over 10 real episodes (module scope: set up before ``no_real_env``)."""
    return float(evaluate_policy(TASK, policy, list(range(10)), seed=0).returns.mean())


@pytest.fixture(autouse=True)
def no_real_env(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("the model-based estimate built a real env")

    monkeypatch.setattr(gymnasium, "make", refuse)


def data_returns(data) -> torch.Tensor:
    """The recorded episodes' returns [episodes]."""
    episode = episode_starts(data).long().cumsum(0) - 1
    rewards = data[REWARD].reshape(-1).double()
    return torch.zeros(int(episode[-1]) + 1, dtype=torch.float64).index_add_(0, episode, rewards)


def test_estimate_on_real_data(data, ensemble, real_return):
    starts = start_states(data)
    real = data_returns(data)
    result = model_value(ensemble, policy, starts, TASK)
    assert result.horizon == 1000 and result.starts == starts.shape[0] == real.shape[0]
    assert len(result.per_member) == 3 and result.members == tuple(ensemble.elites.tolist())
    assert all(math.isfinite(v) for v in result.per_member)
    # a random-ish policy falls within tens of steps in the real env; the model's return is of the data's order
    assert real.min() / 10 < result.return_mean < real.max() * 10, (result, real.min(), real.max())
    assert result.return_min <= result.return_mean and result.return_std >= 0
    assert result.episode_steps < 200  # the task's termination stops the model's rows
    assert result.normalized_mean == pytest.approx(TASK.normalized_score(result.return_mean), rel=1e-6)
    # and close to the truth: measured 5.85 (members 5.74 to 6.00) against a real return of 6.2 (11 steps)
    assert result.return_mean == pytest.approx(real_return, rel=0.25), (result, real_return)


@pytest.mark.parametrize("mode", ["sample", "elite_sampled"])
def test_seeded_modes_repeat(data, ensemble, mode):
    starts = start_states(data)
    config = ModelValueConfig(mode=mode, seed=7, replicates=3)
    mdp = ModelMDP(TASK.termination_fn, penalty_coef_raw=1.0) if mode == "elite_sampled" else None
    first = model_value(ensemble, policy, starts, TASK, config, mdp=mdp)
    assert model_value(ensemble, policy, starts, TASK, config, mdp=mdp) == first
    assert math.isfinite(first.return_mean) and first.per_member != model_value(
        ensemble, policy, starts, TASK, ModelValueConfig(mode=mode, seed=8, replicates=3), mdp=mdp).per_member
    if mode == "elite_sampled":
        assert first.penalized_mean < first.return_mean  # lambda * u > 0 on every step


def test_the_guard_bites():
    """The tests above would notice a real env: building one here fails."""
    from mopo_lightning.envs.wrappers import make_env

    with pytest.raises(AssertionError, match="real env"):
        make_env(TASK)
