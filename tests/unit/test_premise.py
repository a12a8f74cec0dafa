"""The premise metrics (diagnostics/premise.py) on hand-made ensembles, and the figure (callbacks/premise.py)."""

from __future__ import annotations

import math

import pytest
import torch
from scipy.stats import spearmanr

from mopo_lightning.callbacks.premise import lightning_epoch_step, png_to_array, premise_figure
from mopo_lightning.diagnostics.premise import (
    DataReference,
    branched_returns,
    distance_to_data,
    evenly_spaced,
    one_step,
    premise_metrics,
    real_windows,
    spearman,
)
from mopo_lightning.envs.termination import never
from mopo_lightning.model_env.mdp import ModelMDP
from mopo_lightning.transitions import transitions


def mdp(penalty_coef_raw: float = 1.0, penalty_kind: str = "aleatoric", reward_mode: str = "sample",
        termination_fn=never, **kw) -> ModelMDP:
    return ModelMDP(termination_fn, penalty_coef_raw, penalty_kind, reward_mode, **kw)


class Fixed:
    """E members predicting mean = [a . 1, s + shift_i] with fixed std per member; elites 0 and 1."""

    def __init__(self, shifts=(0.0, 0.2, 1.0), stds=(0.1, 0.3, 2.0)):
        self.shifts, self.stds = torch.tensor(shifts), torch.tensor(stds)
        self.elites = torch.tensor([0, 1])
        self.calls = 0

    def predict(self, obs, action):
        self.calls += 1
        reward = action.sum(-1, keepdim=True)
        mean = torch.stack([torch.cat([reward, obs + s], -1) for s in self.shifts])
        std = self.stds[:, None, None].expand_as(mean).clone()
        return mean, std


def episodes(lengths, terminated, obs_dim=2, seed=0):
    """Recorded-style transitions: episode i of lengths[i] steps, rewards random, last row terminated[i]."""
    gen = torch.Generator().manual_seed(seed)
    n = sum(lengths)
    obs = torch.randn(n, obs_dim, generator=gen)
    term = torch.zeros(n, dtype=torch.bool)
    ends = torch.tensor(lengths).cumsum(0) - 1
    term[ends] = torch.tensor(terminated)
    td = transitions(obs, torch.randn(n, 2, generator=gen), obs + 1, torch.randn(n, generator=gen), term,
                     truncated=~term & torch.isin(torch.arange(n), ends))
    td["episode"] = torch.cat([torch.full((t,), i) for i, t in enumerate(lengths)])
    td["step"] = torch.cat([torch.arange(t) for t in lengths])
    return td


def test_spearman_matches_scipy_batched_and_at_the_extremes():
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(3, 200, generator=gen)
    y = x + torch.randn(3, 200, generator=gen)
    rho = spearman(x, y)
    for i in range(3):
        assert float(rho[i]) == pytest.approx(spearmanr(x[i], y[i]).statistic, abs=1e-9)
    assert float(spearman(x[0], x[0].exp())) == pytest.approx(1.0)
    assert float(spearman(x[0], -x[0])) == pytest.approx(-1.0)
    assert torch.isnan(spearman(x[0], torch.ones(200)))


def test_one_step_error_nll_penalties_by_hand():
    model = Fixed()
    obs, action = torch.tensor([[1.0, 2.0]]), torch.tensor([[0.5, 0.5]])
    reward, next_obs = torch.tensor([0.0]), torch.tensor([[1.5, 2.0]])
    rows = one_step(model, obs, action, reward, next_obs)
    prediction = torch.tensor([1.0, 1.1, 2.1])  # mean of elites 0 and 1: shifts 0 and 0.2
    truth = torch.tensor([0.0, 1.5, 2.0])
    assert float(rows["model_error"][0]) == pytest.approx(float((prediction - truth).norm()))
    assert float(rows["model_error_state"][0]) == pytest.approx(float((prediction - truth)[1:].norm()))
    assert float(rows["aleatoric/penalty"][0]) == pytest.approx(2.0 * 3**0.5)  # all members, 3 columns
    mu = torch.stack([torch.tensor([1.0, 1.0, 2.0]), torch.tensor([1.0, 1.2, 2.2]), torch.tensor([1.0, 2.0, 3.0])])
    disagreement = (mu[:, 1:] - mu[:, 1:].mean(0)).norm(dim=-1).max()
    assert float(rows["disagreement/penalty"][0]) == pytest.approx(float(disagreement))
    normal = torch.distributions.Normal
    density = sum(normal(mu[i], model.stds[i]).log_prob(truth).sum().exp() for i in (0, 1)) / 2
    assert float(rows["nll"][0]) == pytest.approx(-float(density.log()), rel=1e-5)


def test_real_windows_match_a_loop_over_rows():
    lengths, terminated, rollout_length = [7, 3, 5, 1], [False, True, False, True], 4
    td = episodes(lengths, terminated)
    out = real_windows(td, rollout_length)
    reward = td["next", "reward"].reshape(-1).double()
    row = 0
    for length, term in zip(lengths, terminated, strict=True):
        for t in range(length):
            steps = min(rollout_length, length - t)
            assert bool(out["eligible"][row]) == (t + rollout_length <= length or term), (row, t)
            assert int(out["steps"][row]) == steps
            assert float(out["real"][row]) == pytest.approx(float(reward[row:row + steps].sum()))
            row += 1
    shuffled = td[torch.tensor([1, 0] + list(range(2, td.shape[0])))]
    with pytest.raises(ValueError, match="ordered by episode"):
        real_windows(shuffled, rollout_length)


def test_branched_returns_follow_the_policy_for_h_steps_stop_at_termination_and_reuse_the_first_call():
    model = Fixed(shifts=(1.0, 1.0, 1.0), stds=(0.0, 0.0, 0.0))  # s' = s + 1 exactly, r = sum(a)
    settings = mdp(0.5, "aleatoric", "mean")
    start = torch.tensor([[0.0, 0.0], [10.0, 0.0]])
    def policy(obs):  # a_t = s_t[0] on both joints
        return obs[:, :1].expand(-1, 2).clone()

    out = branched_returns(model, start, 4, policy, mdp=settings)
    # row 0: s_0 = 0..3 -> r = 0 + 2 + 4 + 6 = 12; row 1: s_0 = 10..13 -> r = 2 (10 + 11 + 12 + 13) = 92
    assert out["raw"].tolist() == [12.0, 92.0] and out["steps"].tolist() == [4, 4] and model.calls == 4
    assert out["penalized/aleatoric"].tolist() == [12.0, 92.0]  # std 0: no penalty
    def stop_at_12(obs, action, next_obs):
        return next_obs[:, 0] >= 12

    out = branched_returns(model, start, 4, policy, mdp=mdp(0.5, "aleatoric", "mean", stop_at_12))
    assert out["steps"].tolist() == [4, 2] and out["raw"].tolist() == [12.0, 42.0]  # the terminating step counts
    # the first action given (the recorded one), then the policy; its prediction reused: H - 1 ensemble calls
    first = torch.full((2, 2), 5.0)
    out = branched_returns(model, start, 3, policy, mdp=settings, first_action=first)
    assert out["raw"].tolist() == [10.0 + 2 + 4, 10.0 + 22 + 24]
    model.calls = 0
    out = branched_returns(model, start, 3, policy, mdp=settings, first_action=first,
                           first_prediction=model.predict(start, first))
    assert model.calls == 1 + 2 and out["raw"].tolist() == [10.0 + 2 + 4, 10.0 + 22 + 24]


def test_premise_metrics_by_hand_and_distance_to_data():
    model = Fixed(shifts=(1.0, 1.0, 1.0), stds=(0.5, 0.5, 0.5))
    obs = torch.tensor([[0.0, 0.0], [1.0, 1.0], [2.0, 2.0]])
    action = torch.zeros(3, 2)
    td = transitions(obs, action, obs + 1, torch.tensor([1.0, 2.0, 3.0]), torch.zeros(3, dtype=torch.bool))
    td["episode"], td["step"] = torch.zeros(3, dtype=torch.long), torch.arange(3)
    reference = DataReference.from_observations(torch.tensor([[0.0, 0.0], [4.0, 2.0]]))
    premise = premise_metrics(model, td, mdp=mdp(2.0, "disagreement", "mean"),
                              policy=lambda o: torch.zeros(o.shape[0], 2), rollout_length=2, reference=reference)
    s = premise.scalars
    assert s["model_error_mean"] == pytest.approx(float(torch.tensor([1.0, 2.0, 3.0]).mean()))  # reward 0 vs 1, 2, 3
    assert s["rollout_length"] == 2 and s["start_states"] == 2  # the last row has one real step left
    assert s["real_return"] == pytest.approx((3.0 + 5.0) / 2) and s["model_return_raw"] == 0
    assert s["return_gap_raw"] == pytest.approx(-4.0) and s["real_steps"] == s["model_steps"] == 2
    u = 0.5 * 3**0.5
    assert s["aleatoric/model_return_penalized"] == pytest.approx(-2.0 * 2 * u)
    assert s["aleatoric/return_gap"] == pytest.approx(-2.0 * 2 * u - 4.0)
    assert s["model_return_penalized"] == s["disagreement/model_return_penalized"]
    assert s["model_return_penalized"] == pytest.approx(0, abs=1e-6)  # members agree: no disagreement
    assert s["penalized_below_real"] == 1.0
    # dataset std is (2, 1); nearest neighbours of (0,0), (1,1), (2,2): distances 0, |(0.5, 1)|, |(1, 0)|
    expected = torch.tensor([0.0, (0.25 + 1) ** 0.5, 1.0])
    torch.testing.assert_close(premise.rows["distance_to_data"], expected)
    torch.testing.assert_close(distance_to_data(obs, reference, chunk=1), expected)


def test_caps_evenly_spaced_rows_and_start_states():
    assert evenly_spaced(10, 4).tolist() == [0, 3, 6, 9] and evenly_spaced(3, 10).tolist() == [0, 1, 2]
    td = episodes([50, 30], [False, True])
    model = Fixed()
    premise = premise_metrics(model, td, mdp=mdp(),
                              policy=lambda o: torch.zeros(o.shape[0], 2), rollout_length=5, max_rows=20,
                              max_start_states=7)
    assert premise.scalars["rows_measured"] == 20 and premise.scalars["start_states"] == 7
    assert premise.rows["row"].tolist() == evenly_spaced(80, 20).tolist()
    full = premise_metrics(model, td, mdp=mdp(),
                           policy=lambda o: torch.zeros(o.shape[0], 2), rollout_length=5)
    assert full.scalars["start_states"] == 80 - 4  # the truncated episode's last 4 rows have no window


def test_the_figure_is_a_non_empty_png_and_the_epoch_step_follows_lightning():
    gen = torch.Generator().manual_seed(0)
    td = episodes([60, 40], [False, True], seed=1)
    td["next", "observation"] = td["observation"] + torch.randn(100, 2, generator=gen)
    premise = premise_metrics(Fixed(), td, mdp=mdp(),
                              policy=lambda o: torch.zeros(o.shape[0], 2), rollout_length=3)
    png = premise_figure(premise, "aleatoric")
    assert png.startswith(b"\x89PNG") and 5_000 < len(png) < 100_000
    image = png_to_array(png)
    assert image.ndim == 3 and image.shape[-1] == 3 and image.std() > 0
    trainer = type("T", (), {"global_step": 30})()
    assert lightning_epoch_step(trainer, type("M", (), {"sac_updates": torch.tensor(200)})()) == 199
    assert lightning_epoch_step(trainer, object()) == 29


class Growing:
    """3 members whose spread and std grow with |s|: every penalty kind varies over the rows, as the error does."""

    elites = torch.tensor([0, 1])

    def predict(self, obs, action):
        size = 1 + obs.abs().sum(-1, keepdim=True)  # [B, 1]
        reward = action.sum(-1, keepdim=True)
        mean = torch.stack([torch.cat([reward + 0.1 * i * size, obs + 1 + 0.2 * i * size], -1) for i in range(3)])
        std = torch.stack([0.1 * (i + 1) * size.sqrt().expand(-1, 1 + obs.shape[1]) for i in range(3)])
        return mean, std  # spread / std grows as sqrt(|s|), so the scale-free kinds (llv, loo_kl) grow too


def test_the_monitor_measures_every_kind_whichever_trains():
    from mopo_lightning.model_env.penalties import PENALTIES, PENALTY_KINDS

    td = episodes([40, 30], [False, True], seed=2)
    td["action"], td["next", "reward"] = td["action"] * 0, td["next", "reward"] * 0  # the error grows with |s|
    settings = mdp(1.0, "llv", "sample", penalty_coefs_raw={"ensemble_var": 0.0})
    premise = premise_metrics(Growing(), td, mdp=settings,
                              policy=lambda o: torch.zeros(o.shape[0], 2), rollout_length=3)
    s = premise.scalars
    for kind in PENALTY_KINDS:
        for name in ("spearman", "violation_rate", "penalty_mean", "model_return_penalized", "return_gap",
                     "penalized_below_real"):
            assert math.isfinite(s[f"{kind}/{name}"]), (kind, name)
        assert premise.rows[f"{kind}/penalty"].shape == premise.rows["row"].shape
        assert premise.rows[f"return/{kind}/penalized"].shape == premise.rows["return/real"].shape
        error = premise.rows["model_error" if PENALTIES[kind].columns == "all" else "model_error_state"]
        assert torch.equal(premise.rows[f"{kind}/error"], error), kind
        # u and the error both grow with |s| (llv's sampled point makes it noisy)
        assert s[f"{kind}/spearman"] > (0.0 if kind == "llv" else 0.5), kind
    for name in ("spearman", "violation_rate", "return_gap"):  # the trained kind's, where consumers read them
        assert s[name] == s[f"llv/{name}"]
    assert s["ensemble_var/model_return_penalized"] == pytest.approx(s["model_return_raw"])  # its lambda: 0
    assert s["aleatoric/model_return_penalized"] < s["model_return_raw"]  # the others: lambda 1
    only = premise_metrics(Growing(), td, mdp=settings,
                           policy=lambda o: torch.zeros(o.shape[0], 2), rollout_length=3, kinds=("aleatoric",))
    assert {k.split("/")[0] for k in only.scalars if "/" in k} == {"llv", "aleatoric"}
    assert only.scalars["aleatoric/spearman"] == s["aleatoric/spearman"]


@pytest.mark.parametrize("reward_mode", ["sample", "mean"])
def test_one_step_measures_every_kind_as_the_model_env_and_over_its_columns(reward_mode):
    """u per kind: the model env's (the produced point, the elites: loo_kl scores elites 0 and 1 of 3), beside the
    elite-mean error over the kind's own columns (next state for all but aleatoric and loo_kl)."""
    from mopo_lightning.model_env.env import produced_transition
    from mopo_lightning.model_env.penalties import PENALTIES, PENALTY_KINDS, uncertainty_penalty

    gen = torch.Generator().manual_seed(3)
    obs, action = torch.randn(40, 2, generator=gen), torch.randn(40, 2, generator=gen)
    reward, next_obs = torch.randn(40, generator=gen), torch.randn(40, 2, generator=gen)
    model = Growing()
    rows = one_step(model, obs, action, reward, next_obs, generator=torch.Generator().manual_seed(5),
                    reward_mode=reward_mode)
    mean, std = model.predict(obs, action)
    point = produced_transition(mean, std, model.elites, torch.Generator().manual_seed(5), reward_mode)
    diff = mean[model.elites].mean(0) - torch.cat([reward[:, None], next_obs], -1)
    for kind in PENALTY_KINDS:
        torch.testing.assert_close(rows[f"{kind}/penalty"], uncertainty_penalty(mean, std, kind, point, model.elites))
        columns = diff if PENALTIES[kind].columns == "all" else diff[:, 1:]
        torch.testing.assert_close(rows[f"{kind}/error"], columns.norm(dim=-1))
    assert not torch.allclose(rows["loo_kl/penalty"], uncertainty_penalty(mean, std, "loo_kl"))  # not all 3
