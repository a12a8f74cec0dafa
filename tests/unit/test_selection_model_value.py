"""The model-based value estimate (mopo_lightning/selection/model_value.py) against closed forms on linear models.

A mathematical test case, not physics: observation and action are 1-dim, member e is s' = a_e s (+ sigma eps when
sampled) with reward r(s) = s, so from s0 the H-step return is s0 (1 - a_e^H) / (1 - a_e).

Mutations of model_value.py each test was checked to catch (the test fails with the mutation in place):
- the reward of the next state (``reward`` from s' instead of s): test_geometric_return_per_elite;
- ``members`` ignored (all members rolled out): test_geometric_return_per_elite (4 returns, not 3);
- the terminal transition's reward dropped (``counted = alive & finite & ~terminated``):
  test_termination_truncates;
- compaction gathers ``obs`` but not ``slot`` (rewards credited to another start; the means over starts cannot
  see it, the per-row returns of ``rollout_returns`` do): test_termination_truncates (compact_every 1 and 3);
- finished rows not masked (``counted = finite``): test_termination_truncates;
- a Python loop over members (one forward per member per step): test_one_forward_per_step;
- ``member_step`` slicing the weights by ``arange(K)`` instead of ``members``: test_real_ensemble_member_by_member;
- the elite drawn once per rollout instead of per step: test_elite_sampled_draws_an_elite_per_step (5.8, not 3.3);
- ``penalized`` summed from ``raw_reward``: test_elite_sampled_penalty;
- ``sample`` mode using the mean: test_sample_mode_is_seeded;
- chunks concatenated along members (dim 0): test_chunks_and_max_starts;
- a non-finite reward counted (NaN return): test_non_finite_reward_stops_the_row.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import Tensor, nn

from mopo_lightning.dynamics.ensemble import GaussianEnsemble
from mopo_lightning.envs import termination
from mopo_lightning.envs.tasks import Task
from mopo_lightning.model_env.mdp import ModelMDP
from mopo_lightning.selection.model_value import ModelValueConfig, member_step, model_value, rollout_returns

A = (0.5, 0.8, 0.9, 0.95)
"""Member e's s' = a_e s."""


class LinearMembers(nn.Module):
    """E linear members over a 1-dim state: mean [r, s' - s] = [s, (a_e - 1) s], log-variance 2 log sigma.

    ``nan_below``: the reward is NaN where s < nan_below (a model that blows up there). ``forward_inputs``: the
    shape of every forward's inputs, in call order."""

    def __init__(self, a=A, elites=(2, 0, 3), sigma: float = 0.0, nan_below: float | None = None) -> None:
        super().__init__()
        self.a = nn.Parameter(torch.tensor(a, dtype=torch.float32))  # [E]
        self.num_members = len(a)
        self.register_buffer("elites", torch.tensor(elites))
        self.logvar = 2 * math.log(sigma) if sigma > 0 else -200.0
        self.nan_below = nan_below
        self.forward_inputs: list[tuple[int, ...]] = []

    def forward(self, inputs: Tensor) -> tuple[Tensor, Tensor]:
        self.forward_inputs.append(tuple(inputs.shape))
        s = inputs[..., :1]  # [K, B, 1]
        reward = s if self.nan_below is None else torch.where(s < self.nan_below, math.nan, s)
        mean = torch.cat([reward, (self.a[:, None, None] - 1) * s], dim=-1)  # [K, B, 2]
        return mean, torch.full_like(mean, self.logvar)

    def member_parameters(self) -> list[nn.Parameter]:
        return [self.a]

    def predict(self, obs: Tensor, action: Tensor) -> tuple[Tensor, Tensor]:
        inputs = torch.cat([obs, action], dim=-1).expand(self.num_members, *obs.shape[:-1], 2)
        mean, logvar = self(inputs)
        mean = torch.cat([mean[..., :1], mean[..., 1:] + obs], dim=-1)
        return mean, (0.5 * logvar).exp()


def below(c: float):
    """Terminates when the next state drops under c."""
    return lambda obs, action, next_obs: next_obs[..., 0] < c


def line_task(term=termination.never) -> Task:
    return Task("line", "none", 1, 1, term, ref_min_score=-10.0, ref_max_score=40.0)


def zero_policy(obs: Tensor) -> Tensor:
    return torch.zeros(obs.shape[0], 1)


def geometric(a: float, h: int) -> float:
    return (1 - a**h) / (1 - a)


def reference_return(a: float, s0: float, h: int, c: float) -> tuple[float, int]:
    """The return and steps of s_{t+1} = a s_t, r_t = s_t, ending at the first transition into s' < c."""
    s, total = s0, 0.0
    for t in range(h):
        total += s
        s *= a
        if s < c:
            return total, t + 1
    return total, h


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_geometric_return_per_elite():
    h, starts = 40, torch.tensor([[1.0], [2.0], [-0.5]])
    result = model_value(LinearMembers(), zero_policy, starts, line_task(), ModelValueConfig(horizon=h))
    expected = np.array([starts.mean().item() * geometric(A[e], h) for e in (2, 0, 3)])  # the elites, in order
    assert result.members == (2, 0, 3)
    np.testing.assert_allclose(result.per_member, expected, rtol=1e-5)
    assert result.return_mean == pytest.approx(expected.mean(), rel=1e-5)
    assert result.return_std == pytest.approx(expected.std(), rel=1e-4)  # population std over members
    assert result.return_min == pytest.approx(expected.min(), rel=1e-5)
    assert result.normalized_min == pytest.approx(100 * (expected.min() + 10) / 50, rel=1e-5)
    assert result.normalized_std == pytest.approx(100 * expected.std() / 50, rel=1e-4)
    assert (result.starts, result.horizon, result.episode_steps, result.diverged) == (3, h, h, 0.0)
    config = ModelValueConfig(horizon=h, members="all")
    every = model_value(LinearMembers(), zero_policy, starts, line_task(), config)
    np.testing.assert_allclose(every.per_member, [starts.mean().item() * geometric(a, h) for a in A], rtol=1e-5)


@pytest.mark.parametrize("compact_every", [0, 1, 3])
def test_termination_truncates(compact_every):
    h, c, s0 = 60, 0.1, (1.0, 0.5, 3.0)
    config = ModelValueConfig(horizon=h, members="all", compact_every=compact_every)
    result = model_value(LinearMembers(), zero_policy, torch.tensor(s0)[:, None], line_task(below(c)), config)
    ref = [[reference_return(a, s, h, c) for s in s0] for a in A]
    np.testing.assert_allclose(result.per_member, [np.mean([r for r, _ in row]) for row in ref], rtol=1e-5)
    assert result.episode_steps == pytest.approx(np.mean([[n for _, n in row] for row in ref]))
    assert result.per_member[0] == pytest.approx((1 + 0.5 + 0.25 + 0.125 + 0.5 + 0.25 + 0.125 + 3 * 1.9375) / 3)
    # per row (member, start): each row's rewards reach its own start, however the rows were packed
    model, gen = LinearMembers(), torch.Generator()
    step = member_step(model, torch.arange(4), below(c), "mean", gen)
    obs = torch.tensor(s0)[:, None].expand(4, 3, 1)
    rows = rollout_returns(step, zero_policy, obs, h, compact_every)
    np.testing.assert_allclose(rows["raw"], [[r for r, _ in row] for row in ref], rtol=1e-5)
    np.testing.assert_array_equal(rows["steps"], [[n for _, n in row] for row in ref])


def test_one_forward_per_step():
    model, h = LinearMembers(), 7
    model_value(model, zero_policy, torch.ones(5, 1), line_task(), ModelValueConfig(horizon=h, compact_every=0))
    assert model.forward_inputs == [(3, 5, 2)] * h  # every elite at once: [K, B, O + A]


def test_real_ensemble_member_by_member():
    """The real GaussianEnsemble (normaliser, SiLU, sliced member weights) against predict() member by member."""
    torch.manual_seed(0)
    model = GaussianEnsemble(3, 2, num_members=4, num_elites=2, hidden_dim=16, num_layers=2,
                             weight_decays=(0.0, 0.0, 0.0))
    model.fit_normalizer(torch.randn(100, 5) * 2 + 1)
    model.elites.copy_(torch.tensor([3, 1]))
    weights = torch.randn(3, 2)

    def policy(obs: Tensor) -> Tensor:
        return torch.tanh(obs @ weights)

    starts, h = torch.randn(6, 3), 4
    task = Task("free", "none", 3, 2, termination.never, 0.0, 100.0)
    result = model_value(model, policy, starts, task, ModelValueConfig(horizon=h))
    expected = []
    for e in (3, 1):  # the reference: member e's own trajectory, one member at a time
        obs, total = starts.clone(), torch.zeros(6)
        for _ in range(h):
            mean, _ = model.predict(obs, policy(obs))
            total += mean[e, :, 0]
            obs = mean[e, :, 1:]
        expected.append(total.mean().item())
    np.testing.assert_allclose(result.per_member, expected, rtol=1e-4, atol=1e-5)


def test_elite_sampled_draws_an_elite_per_step():
    """E[s_t] = mean(a)^t when each step draws its own member: the return is the geometric sum at mean(a)."""
    h, model = 30, LinearMembers(a=(0.5, 0.9), elites=(0, 1))
    config = ModelValueConfig(horizon=h, mode="elite_sampled", replicates=4, seed=3)
    result = model_value(model, zero_policy, torch.ones(2000, 1), line_task(), config)
    assert result.members == (0, 1, 2, 3) and len(result.per_member) == 4  # the spread is over replicates
    np.testing.assert_allclose(result.per_member, geometric(0.7, h), rtol=0.03)
    assert model_value(model, zero_policy, torch.ones(2000, 1), line_task(), config) == result  # seeded
    assert result.penalized_mean is None


def test_elite_sampled_penalty():
    h, lam, sigma = 20, 0.5, 0.1
    model = LinearMembers(sigma=sigma)
    mdp = ModelMDP(termination.never, penalty_coef_raw=lam, penalty_kind="aleatoric", reward_mode="mean")
    config = ModelValueConfig(horizon=h, mode="elite_sampled", replicates=3)
    result = model_value(model, zero_policy, torch.ones(50, 1), line_task(), config, mdp=mdp)
    u = sigma * math.sqrt(2)  # max over members of ||sigma_e|| over [reward, s']
    assert result.penalized_mean == pytest.approx(result.return_mean - lam * u * h, rel=1e-5)
    assert result.penalized_min == pytest.approx(result.return_min - lam * u * h, rel=1e-5)
    with pytest.raises(ValueError, match="elite_sampled"):
        model_value(model, zero_policy, torch.ones(5, 1), line_task(), ModelValueConfig(horizon=h), mdp=mdp)


def test_sample_mode_is_seeded():
    """Additive zero-mean noise keeps E[return]; the draws follow the seed."""
    h, model, starts = 20, LinearMembers(sigma=0.1), torch.ones(4000, 1)

    def run(seed: int):
        config = ModelValueConfig(horizon=h, mode="sample", seed=seed, max_starts=None)
        return model_value(model, zero_policy, starts, line_task(), config)

    first = run(0)
    assert run(0) == first and run(1).per_member != first.per_member
    np.testing.assert_allclose(first.per_member, [geometric(A[e], h) for e in (2, 0, 3)], rtol=0.02)
    exact = model_value(LinearMembers(), zero_policy, torch.ones(3, 1), line_task(),
                        ModelValueConfig(horizon=h, mode="sample"))
    np.testing.assert_allclose(exact.per_member, [geometric(A[e], h) for e in (2, 0, 3)], rtol=1e-5)  # sigma 0


def test_chunks_and_max_starts():
    h, starts = 15, torch.tensor([[1.0], [2.0], [3.0], [4.0], [5.0]])
    whole = model_value(LinearMembers(), zero_policy, starts, line_task(below(0.3)), ModelValueConfig(horizon=h))
    chunked = model_value(LinearMembers(), zero_policy, starts, line_task(below(0.3)),
                          ModelValueConfig(horizon=h, chunk_starts=2))
    np.testing.assert_allclose(chunked.per_member, whole.per_member, rtol=1e-6)
    two = model_value(LinearMembers(), zero_policy, starts, line_task(), ModelValueConfig(horizon=h, max_starts=2))
    assert two.starts == 2  # evenly spaced: the first and the last
    np.testing.assert_allclose(two.per_member, [3.0 * geometric(A[e], h) for e in (2, 0, 3)], rtol=1e-5)


def test_non_finite_reward_stops_the_row():
    h, model = 10, LinearMembers(a=(0.5, 0.9), elites=(0, 1), nan_below=0.3)
    result = model_value(model, zero_policy, torch.ones(2, 1), line_task(), ModelValueConfig(horizon=h))
    np.testing.assert_allclose(result.per_member, [1 + 0.5, sum(0.9**t for t in range(h))], rtol=1e-5)
    assert result.diverged == 0.5  # member 0's rows reach 0.25 at step 2; member 1's stay above 0.3


def test_config_is_checked():
    for bad in ({"horizon": 0}, {"replicates": 0}, {"compact_every": -1}, {"max_starts": 0}, {"mode": "median"},
                {"members": "best"}):
        with pytest.raises(ValueError):
            ModelValueConfig(**bad)


def test_select_estimators_own_and_evaluation_model_in_closed_form():
    """``select``'s four model-based estimators: mean and min over elites, in the run's own model and in an
    evaluation model, each the normalised closed form (a mutation swapping the two models, or mean for min, fails)."""
    from mopo_lightning.selection.estimators import EstimatorConfig, estimate

    h, starts = 30, torch.tensor([[1.0], [2.0]])
    own, other = LinearMembers(), LinearMembers(a=(0.6, 0.7, 0.3, 0.99), elites=(0, 1))
    config = EstimatorConfig(model_value=ModelValueConfig(horizon=h))
    scores, details = estimate(zero_policy, own, other, starts, line_task(), config)

    def score(ret: float) -> float:
        return 100 * (ret + 10) / 50

    own_returns = [1.5 * geometric(A[e], h) for e in (2, 0, 3)]
    eval_returns = [1.5 * geometric(a, h) for a in (0.6, 0.7)]
    assert scores["own_mean"] == pytest.approx(score(np.mean(own_returns)), rel=1e-5)
    assert scores["own_min"] == pytest.approx(score(min(own_returns)), rel=1e-5)
    assert scores["eval_mean"] == pytest.approx(score(np.mean(eval_returns)), rel=1e-5)
    assert scores["eval_min"] == pytest.approx(score(min(eval_returns)), rel=1e-5)
    assert set(scores) == {"own_mean", "own_min", "eval_mean", "eval_min"}  # FQE off by default
    assert details["eval_model"]["members"] == (0, 1)
    alone, _ = estimate(zero_policy, own, None, starts, line_task(), config)
    assert set(alone) == {"own_mean", "own_min"}
