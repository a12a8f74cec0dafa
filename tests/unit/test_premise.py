"""The premise metrics (envs/premise.py) on hand-made ensembles, and the figures (callbacks/premise.py)."""

from __future__ import annotations

import pytest
import torch
from scipy.stats import spearmanr

from mopo_lightning.callbacks.premise import png_to_array, premise_figures
from mopo_lightning.envs.premise import (
    DataReference,
    PenaltySettings,
    distance_to_data,
    model_returns,
    one_step,
    premise_metrics,
    spearman,
)
from mopo_lightning.envs.termination import never
from mopo_lightning.transitions import transitions


class Fixed:
    """E members predicting mean = [a . 1, s + shift_i] with fixed std per member; elites 0 and 1."""

    def __init__(self, shifts=(0.0, 0.2, 1.0), stds=(0.1, 0.3, 2.0)):
        self.shifts, self.stds = torch.tensor(shifts), torch.tensor(stds)
        self.elites = torch.tensor([0, 1])

    def predict(self, obs, action):
        reward = action.sum(-1, keepdim=True)
        mean = torch.stack([torch.cat([reward, obs + s], -1) for s in self.shifts])
        std = self.stds[:, None, None].expand_as(mean).clone()
        return mean, std


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


def test_model_returns_follow_the_policy_stop_at_lengths_and_termination():
    model = Fixed(shifts=(1.0, 1.0, 1.0), stds=(0.0, 0.0, 0.0))  # s' = s + 1 exactly, r = sum(a)
    start = torch.zeros(3, 2)
    lengths = torch.tensor([4, 2, 0])
    out = model_returns(model, start, lengths, lambda obs: obs[:, :1].expand(-1, 2).clone(),
                        termination_fn=never, settings=PenaltySettings(0.5, "aleatoric", "mean"))
    # a_t = s_t[0] = t on both joints: r_t = 2 t; returns 0 + 2 + 4 + 6 = 12 and 0 + 2 = 2
    assert out["raw"].tolist() == [12.0, 2.0, 0.0] and out["length"].tolist() == [4, 2, 0]
    stop_at_3 = lambda obs, action, next_obs: next_obs[:, 0] >= 3
    out = model_returns(model, start, torch.tensor([10, 10, 10]), lambda obs: obs.clone(),
                        termination_fn=stop_at_3, settings=PenaltySettings(0.5, "aleatoric", "mean"))
    assert out["length"].tolist() == [3, 3, 3] and out["raw"].tolist() == [6.0, 6.0, 6.0]


def test_premise_metrics_on_a_hand_made_episode_and_distance_to_data():
    model = Fixed(shifts=(1.0, 1.0, 1.0), stds=(0.5, 0.5, 0.5))
    obs = torch.tensor([[0.0, 0.0], [1.0, 1.0], [2.0, 2.0]])
    action = torch.zeros(3, 2)
    td = transitions(obs, action, obs + 1, torch.zeros(3), torch.zeros(3, dtype=torch.bool))
    td["episode"], td["step"] = torch.zeros(3, dtype=torch.long), torch.arange(3)
    reference = DataReference.from_observations(torch.tensor([[0.0, 0.0], [4.0, 2.0]]))
    premise = premise_metrics(model, td, termination_fn=never, settings=PenaltySettings(2.0, "disagreement", "mean"),
                              policy=lambda o: torch.zeros(o.shape[0], 2), reference=reference)
    s = premise.scalars
    assert s["model_error_mean"] == 0 and s["violation_rate"] == 0 and s["disagreement/violation_rate"] == 0
    assert s["real_return"] == 0 and s["model_return_raw"] == 0 and s["model_episode_length"] == 3
    u = 0.5 * 3**0.5
    assert s["aleatoric/model_return_penalized"] == pytest.approx(-2.0 * 3 * u)
    assert s["model_return_penalized"] == s["disagreement/model_return_penalized"] == 0  # members agree
    # dataset std is (2, 1); nearest neighbours of (0,0), (1,1), (2,2): distances 0, |(0.5, 1)|, |(1, 0)|
    expected = torch.tensor([0.0, (0.25 + 1) ** 0.5, 1.0])
    torch.testing.assert_close(premise.rows["distance_to_data"], expected)
    torch.testing.assert_close(distance_to_data(obs, reference, chunk=1), expected)


def test_the_figures_are_non_empty_pngs():
    model = Fixed()
    gen = torch.Generator().manual_seed(0)
    obs, action = torch.randn(50, 2, generator=gen), torch.randn(50, 2, generator=gen)
    td = transitions(obs, action, obs + torch.randn(50, 2, generator=gen), torch.zeros(50),
                     torch.zeros(50, dtype=torch.bool))
    td["episode"], td["step"] = torch.zeros(50, dtype=torch.long), torch.arange(50)
    premise = premise_metrics(model, td, termination_fn=never, settings=PenaltySettings(1.0),
                              policy=lambda o: torch.zeros(o.shape[0], 2))
    figures = premise_figures(premise, PenaltySettings(1.0))
    assert set(figures) == {"calibration", "scatter"}
    for png in figures.values():
        assert png.startswith(b"\x89PNG") and len(png) > 5_000
        image = png_to_array(png)
        assert image.ndim == 3 and image.shape[-1] == 3 and image.std() > 0
