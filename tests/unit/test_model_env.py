"""PenalizedModelEnv / model_step against hand computations, with a deterministic stand-in ensemble."""

from __future__ import annotations

import math

import pytest
import torch
from tensordict import TensorDict
from torchrl.envs.utils import check_env_specs

from mopo_lightning.envs.termination import hopper as hopper_termination
from mopo_lightning.model_env.env import PenalizedModelEnv, model_step
from mopo_lightning.model_env.mdp import ModelMDP
from mopo_lightning.model_env.penalties import uncertainty_penalty

OBS, A = 2, 1


def never(obs, act, next_obs):
    return torch.zeros(next_obs.shape[:-1], dtype=torch.bool)


class StandIn:
    """Member i predicts mean = base[i] (+ s on the state part) and std = std[i], for every row."""

    def __init__(self, base: torch.Tensor, std: torch.Tensor, elites: list[int]) -> None:
        self.base, self.std = base, std  # [E, 1 + OBS]
        self.elites = torch.tensor(elites)
        self.batch_sizes: list[int] = []

    def predict(self, obs: torch.Tensor, act: torch.Tensor):
        self.batch_sizes.append(obs.shape[0])
        E, B = self.base.shape[0], obs.shape[0]
        mean = self.base[:, None, :].expand(E, B, -1).clone()
        mean[..., 1:] += obs
        return mean, self.std[:, None, :].expand(E, B, -1).clone()


def tagged(num_members: int = 7, elites=(1, 2, 4, 5, 6), std: float = 0.0) -> StandIn:
    """Member i: reward i, state shift 10 * i; so a row's reward names its member."""
    base = torch.stack([torch.tensor([float(i), 10.0 * i, -10.0 * i]) for i in range(num_members)])
    return StandIn(base, torch.full_like(base, std), list(elites))


def mdp(termination_fn=never, penalty_coef_raw=0.0, **kw) -> ModelMDP:
    return ModelMDP(termination_fn, penalty_coef_raw, **kw)


def step(ens, obs, **kw):
    return model_step(ens, obs, torch.zeros(obs.shape[0], A), mdp(**kw), torch.Generator().manual_seed(0))


def test_aleatoric_penalty_is_max_std_norm_over_all_members_and_outputs():
    # std norms 3, 5, 6: the largest is the reward column's (6), so leaving reward out would give 5
    std = torch.tensor([[1.0, 2.0, 2.0], [0.0, 3.0, 4.0], [6.0, 0.0, 0.0]])
    ens = StandIn(torch.zeros(3, 3), std, elites=[0, 1])  # the max member is not an elite
    out = step(ens, torch.zeros(4, OBS), penalty_coef_raw=0.5, reward_mode="mean")
    assert torch.allclose(out["penalty"], torch.full((4, 1), 6.0))
    assert torch.allclose(out["reward"], out["raw_reward"] - 0.5 * 6.0)
    assert torch.allclose(out["raw_reward"], torch.zeros(4, 1))


def test_disagreement_penalty_uses_next_state_means_only():
    # next-state means (0,0), (2,0), (4,3) -> centre (2,1); distances sqrt(5), 1, sqrt(8); rewards differ wildly
    base = torch.tensor([[100.0, 0.0, 0.0], [-100.0, 2.0, 0.0], [0.0, 4.0, 3.0]])
    ens = StandIn(base, torch.full((3, 3), 0.1), elites=[0])
    out = step(ens, torch.randn(5, OBS), penalty_kind="disagreement", penalty_coef_raw=2.0, reward_mode="mean")
    assert torch.allclose(out["penalty"], torch.full((5, 1), math.sqrt(8.0)))
    assert torch.allclose(out["reward"], 100.0 - 2.0 * math.sqrt(8.0) * torch.ones(5, 1))
    with pytest.raises(ValueError):
        uncertainty_penalty(base[:, None], base[:, None], "bogus")  # type: ignore[arg-type]


def test_only_elites_uniformly_and_one_member_gives_reward_and_next_state():
    ens, n = tagged(elites=(1, 2, 4, 5, 6)), 20_000
    obs = torch.randn(n, OBS)
    out = step(ens, obs)
    member = out["raw_reward"].squeeze(-1).round().long()
    assert set(member.unique().tolist()) == {1, 2, 4, 5, 6}
    freq = torch.bincount(member, minlength=7)[[1, 2, 4, 5, 6]].float() / n
    assert (freq - 0.2).abs().max() < 0.015  # ~5 standard errors
    expected_next = obs + torch.stack([10.0 * member, -10.0 * member], dim=-1)
    assert torch.allclose(out["observation"], expected_next)


def test_sample_is_mean_plus_noise_times_std_and_mean_mode_is_exact():
    base = torch.tensor([[1.0, 0.0, 0.0], [-50.0, 0.0, 0.0]])  # member 1 is never chosen
    ens = StandIn(base, torch.tensor([[2.0, 0.5, 0.5], [0.0, 0.0, 0.0]]), elites=[0])
    obs = torch.zeros(50_000, OBS)
    sampled = step(ens, obs)
    r, s2 = sampled["raw_reward"], sampled["observation"]
    assert abs(r.mean().item() - 1.0) < 0.05 and abs(r.std().item() - 2.0) < 0.05
    assert s2.std(dim=0).sub(0.5).abs().max() < 0.02
    # reward noise and state noise are independent draws
    assert abs(torch.corrcoef(torch.cat([r, s2], -1).T)[0, 1].item()) < 0.03
    mean_mode = step(ens, obs, reward_mode="mean")
    assert torch.equal(mean_mode["raw_reward"], torch.ones(50_000, 1))
    assert mean_mode["observation"].std() > 0.4  # the state is still sampled
    with pytest.raises(KeyError):
        step(ens, obs, reward_mode="median")


def test_hopper_termination_flags_rows_and_done_equals_terminated():
    ens = StandIn(torch.zeros(2, 1 + 11), torch.zeros(2, 1 + 11), elites=[0, 1])  # s' = s
    obs = torch.zeros(4, 11)
    obs[:, 0] = torch.tensor([1.25, 0.5, 1.25, 1.25])  # row 1 too low
    obs[2, 1] = 0.3  # row 2 tilted
    obs[3, 5] = 150.0  # row 3 state out of range
    out = step(ens, obs, termination_fn=hopper_termination)
    expected = torch.tensor([[False], [True], [True], [True]])
    assert torch.equal(out["terminated"], expected) and torch.equal(out["done"], expected)
    assert not out["truncated"].any()


def make_env(ens=None, n=6, **kw) -> PenalizedModelEnv:
    ens = ens if ens is not None else tagged(std=0.1)
    return PenalizedModelEnv(ens, mdp(**{"penalty_coef_raw": 1.0, **kw}), n, OBS, A)


def test_specs_pass_with_given_states():
    env = make_env()
    given = env.reset(TensorDict({"observation": torch.randn(6, OBS)}, batch_size=[6]))
    check_env_specs(make_env(), tensordict=given)
    assert env.observation_spec["observation"].shape == (6, OBS)
    assert env.action_spec.shape == (6, A) and env.action_spec.space.high.max() == 1.0
    assert env.reward_spec.shape == (6, 1) and env.full_done_spec["terminated"].dtype == torch.bool


def test_reset_from_given_states_partial_reset_and_missing_states():
    env = make_env()
    starts = torch.randn(6, OBS)
    td = env.reset(TensorDict({"observation": starts}, batch_size=[6]))
    assert torch.equal(td["observation"], starts) and not td["done"].any()
    with pytest.raises(ValueError, match="initial-state"):
        env.reset()
    # partial reset with given states: masked rows take the td's rows (the caller wrote new starts
    # there), the others keep their state and done flags
    new = torch.full((6, OBS), 9.0)
    mask = torch.tensor([True, False, True, False, False, True])
    cur = TensorDict({"observation": torch.where(mask[:, None], new, starts)}, [6])
    for key in ("done", "terminated"):
        cur[key] = torch.ones(6, 1, dtype=torch.bool)
    cur["truncated"], cur["_reset"] = torch.zeros(6, 1, dtype=torch.bool), mask[:, None]
    out = env.reset(cur)
    assert torch.equal(out["observation"][mask], new[mask]) and torch.equal(
        out["observation"][~mask], starts[~mask]
    )
    assert torch.equal(out["done"].squeeze(-1), ~mask) and torch.equal(out["terminated"].squeeze(-1), ~mask)


def test_partial_step_touches_only_live_rows():
    ens = tagged(std=0.0)
    env = make_env(ens)
    td = env.reset(TensorDict({"observation": torch.zeros(6, OBS)}, batch_size=[6]))
    td["action"] = torch.zeros(6, A)
    live = torch.tensor([True, False, True, True, False, False])
    td["_step"] = live[:, None]
    ens.batch_sizes.clear()
    out = env.step(td)["next"]
    assert ens.batch_sizes == [3]
    assert torch.equal(out["observation"][~live], torch.zeros(3, OBS)) and (out["reward"][~live] == 0).all()
    assert (out["raw_reward"][live] > 0).all()  # elites 1..6 all have positive reward


def test_rollout_stops_terminated_rows_with_break_when_all_done():
    # member 0 moves the torso down by 0.3 each step: rows starting at 1.25 fall below 0.7 at step 2
    base = torch.zeros(1, 12)
    base[0, 1] = -0.3
    ens = StandIn(base, torch.zeros(1, 12), elites=[0])
    env = PenalizedModelEnv(ens, mdp(hopper_termination), 2, 11, 3)
    starts = torch.zeros(2, 11)
    starts[:, 0] = torch.tensor([1.25, 3.0])
    ens.batch_sizes.clear()
    roll = env.rollout(
        4,
        auto_reset=False,
        tensordict=env.reset(TensorDict({"observation": starts}, [2])),
        break_when_all_done=True,
    )
    term = roll["next", "terminated"].squeeze(-1)
    assert term[0].tolist() == [False, True, True, True] and not term[1].any()
    assert ens.batch_sizes == [2, 2, 1, 1]  # the terminated row is not stepped again
    assert torch.allclose(roll["next", "observation"][1, :, 0], torch.tensor([2.7, 2.4, 2.1, 1.8]))


def test_same_seed_same_rollout_and_penalised_reward():
    def rollout(seed):
        starts = torch.linspace(-1, 1, 6 * OBS).reshape(6, OBS)
        env = make_env(tagged(std=0.3), penalty_coef_raw=0.7)
        env.set_seed(seed)
        actions = torch.linspace(-1, 1, 6 * 3).reshape(3, 6, A)
        td = env.reset(TensorDict({"observation": starts}, batch_size=[6]))
        outs = []
        for a in actions:
            td["action"] = a
            td = env.step(td)
            outs.append(td["next"].clone())
            td = td["next"].clone()
        return torch.stack(outs)

    a, b, c = rollout(3), rollout(3), rollout(4)
    assert (a == b).all()
    assert not torch.equal(a["observation"], c["observation"])
    u = a["penalty"]
    assert torch.allclose(u, torch.full_like(u, 0.3 * math.sqrt(3.0)))
    assert torch.allclose(a["reward"], a["raw_reward"] - 0.7 * u)
