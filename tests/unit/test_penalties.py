"""The penalty kinds (model_env/penalties.py) against explicit loops on a tiny ensemble; their scales and units."""

from __future__ import annotations

import math
from pathlib import Path
from typing import get_args

import lightning as L
import numpy as np
import pytest
import torch

from mopo_lightning.dynamics.fingerprint import dynamics_fingerprint, fingerprint_key
from mopo_lightning.dynamics.module import DynamicsModule, load_dynamics
from mopo_lightning.envs.termination import never
from mopo_lightning.guards import ConfigError
from mopo_lightning.model_env.env import model_step, produced_transition
from mopo_lightning.model_env.mdp import ModelMDP
from mopo_lightning.model_env.penalties import (
    PENALTIES,
    PENALTY_KINDS,
    PenaltyKind,
    measure_scales,
    penalty_coef_in_raw_units,
    scales_current,
    uncertainty_penalty,
)
from mopo_lightning.model_env.settings import MOPOSettings
from mopo_lightning.training.datamodule import OfflineDataModule

# E = 3 members, B = 2 rows, D = 3 outputs (reward, 2 state columns): MEAN[i][b], STD[i][b]
MEAN = [[[0.0, 0.0, 0.0], [1.0, -1.0, 2.0]],
        [[3.0, 4.0, 0.0], [1.5, -0.5, 2.5]],
        [[0.0, 0.0, 12.0], [0.5, -1.5, 1.0]]]
STD = [[[1.0, 2.0, 2.0], [0.2, 0.3, 0.4]],
       [[2.0, 3.0, 6.0], [0.1, 0.1, 0.1]],
       [[0.5, 0.5, 0.5], [0.3, 0.2, 0.5]]]
POINT = [[0.5, 1.0, 2.0], [1.0, -1.0, 2.0]]  # the transition the model produced, per row
E, B, D = 3, 2, 3


def norm(v):
    return math.sqrt(sum(x * x for x in v))


ELITES = [0, 2]
STATE = (1, 2)  # the next-state columns; column 0 is the reward


def by_hand(kind: str, b: int) -> float:
    """Each definition with explicit loops over members and outputs, on row b: the next-state columns for all
    but aleatoric and loo_kl (as Lu et al.'s reference code), population variances (1/E), loo_kl over ELITES."""
    m = [MEAN[i][b] for i in range(E)]
    s = [STD[i][b] for i in range(E)]
    if kind == "aleatoric":
        return max(norm(s[i]) for i in range(E))
    if kind == "disagreement":
        centre = [sum(m[i][d] for i in range(E)) / E for d in STATE]
        return max(norm([m[i][d] - centre[k] for k, d in enumerate(STATE)]) for i in range(E))
    if kind == "max_pairwise_diff":
        return max(norm([m[i][d] - m[j][d] for d in STATE]) for i in range(E) for j in range(E))
    if kind in ("ensemble_var", "ensemble_std"):
        per_output = []
        for d in STATE:
            mu = sum(m[i][d] for i in range(E)) / E
            var = sum(s[i][d] ** 2 for i in range(E)) / E + sum((m[i][d] - mu) ** 2 for i in range(E)) / E
            per_output.append(var if kind == "ensemble_var" else math.sqrt(var))
        return sum(per_output) / len(STATE)
    if kind == "llv":
        ll = [sum(-0.5 * ((POINT[b][d] - m[i][d]) / s[i][d]) ** 2 - math.log(s[i][d]) - 0.5 * math.log(2 * math.pi)
                  for d in STATE) for i in range(E)]
        mean_ll = sum(ll) / E
        return sum((x - mean_ll) ** 2 for x in ll) / E
    if kind == "loo_kl":
        kls = []
        for i in ELITES:  # each elite against every other member (elite or not)
            others = [j for j in range(E) if j != i]
            kl = 0.0
            for d in range(D):  # the others' Gaussian mixture, moment-matched: E[x] and E[x^2] - E[x]^2
                mu = sum(m[j][d] for j in others) / len(others)
                var = sum(s[j][d] ** 2 + m[j][d] ** 2 for j in others) / len(others) - mu ** 2
                kl += 0.5 * (math.log(var / s[i][d] ** 2) + (s[i][d] ** 2 + (m[i][d] - mu) ** 2) / var - 1)
            kls.append(kl)
        return sum(kls) / len(kls)
    raise AssertionError(kind)


def tensors(dtype=torch.float64):
    return torch.tensor(MEAN, dtype=dtype), torch.tensor(STD, dtype=dtype), torch.tensor(POINT, dtype=dtype)


def test_the_registry_is_the_config_type_and_refuses_unknown_kinds():
    assert PENALTY_KINDS == get_args(PenaltyKind) == tuple(PENALTIES)
    assert set(PENALTY_KINDS) == {"aleatoric", "disagreement", "max_pairwise_diff", "ensemble_std", "ensemble_var",
                                  "llv", "loo_kl"}
    assert {k for k, p in PENALTIES.items() if p.columns == "all"} == {"aleatoric", "loo_kl"}
    mean, std, _ = tensors()
    with pytest.raises(ValueError, match="unknown penalty kind 'bogus'"):
        uncertainty_penalty(mean, std, "bogus")  # type: ignore[arg-type]
    with pytest.raises(KeyError, match=r"did you mean llv\?"):
        uncertainty_penalty(mean, std, "llvv")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="llv penalty needs"):
        uncertainty_penalty(mean, std, "llv")


@pytest.mark.parametrize("kind", PENALTY_KINDS)
def test_each_penalty_matches_its_definition_by_hand(kind):
    mean, std, point = tensors()
    u = uncertainty_penalty(mean, std, kind, point, torch.tensor(ELITES))
    assert u.shape == (B,)
    for b in range(B):
        assert float(u[b]) == pytest.approx(by_hand(kind, b), rel=1e-9, abs=1e-12), (kind, b)


def test_the_hand_numbers_themselves():
    """Row 0 by inspection: std norms 3, 7, 0.87 (reward column included); next-state distances 4, 12, sqrt(160)."""
    mean, std, _ = tensors()
    assert float(uncertainty_penalty(mean, std, "aleatoric")[0]) == pytest.approx(7.0)
    assert float(uncertainty_penalty(mean, std, "max_pairwise_diff")[0]) == pytest.approx(math.sqrt(160))
    # next states (0, 0), (4, 0), (0, 12): centre (4/3, 4); the farthest is (0, 12)
    assert float(uncertainty_penalty(mean, std, "disagreement")[0]) == pytest.approx(math.hypot(4 / 3, 8))


@pytest.mark.parametrize("kind", PENALTY_KINDS)
def test_penalties_ignore_where_the_state_is(kind):
    """Adding a constant to every member's mean (and to the point) changes nothing, in float32 too: at an
    offset of 1000 the members' spread (0.1-sized stds, 0.5-sized mean gaps) must survive (no cancellation
    of second moments, whose float32 spacing there is 0.06)."""
    mean, std, point = tensors(torch.float32)
    u = uncertainty_penalty(mean, std, kind, point)
    shifted = uncertainty_penalty(mean + 1000.0, std, kind, point + 1000.0)
    torch.testing.assert_close(shifted, u, rtol=2e-3, atol=1e-5)


@pytest.mark.parametrize("kind", PENALTY_KINDS)
def test_only_aleatoric_and_loo_kl_read_the_reward_column(kind):
    """The next-state kinds (Lu et al.'s reference code) do not move when the reward column's means, stds and
    point change; MOPO's aleatoric and M2AC's loo_kl, which read both, do."""
    mean, std, point = tensors()
    elites = torch.tensor(ELITES)
    mean2, std2, point2 = mean.clone(), std.clone(), point.clone()
    mean2[..., 0] += torch.tensor([5.0, -3.0, 7.0])[:, None]
    std2[..., 0] *= torch.tensor([3.0, 0.5, 2.0])[:, None]
    point2[:, 0] += 10.0
    u, u2 = (uncertainty_penalty(m, s_, kind, p, elites) for m, s_, p in ((mean, std, point), (mean2, std2, point2)))
    if kind not in ("aleatoric", "loo_kl"):
        assert torch.equal(u, u2)
    else:
        assert bool((u != u2).all())


def test_loo_kl_scores_each_elite_against_the_rest_in_closed_form():
    """Unit-variance members at 0, 2 and 4 (one output). Member 0 against the others' moment-matched N(3, 2)
    (mean 3, variance 1 + 1): KL = (ln 2 + 4) / 2; member 1 against N(2, 5): (ln 5 - 0.8) / 2; member 2 as 0."""
    mean = torch.tensor([[[0.0]], [[2.0]], [[4.0]]], dtype=torch.float64)
    std = torch.ones_like(mean)
    outer, middle = (math.log(2) + 4) / 2, (math.log(5) - 0.8) / 2

    def kl(elites):
        return float(uncertainty_penalty(mean, std, "loo_kl", None, None if elites is None else torch.tensor(elites)))

    assert kl([0]) == pytest.approx(outer, rel=1e-12)  # M2AC: the member that made the step
    assert kl([1]) == pytest.approx(middle, rel=1e-12)
    assert kl([0, 2]) == pytest.approx(outer, rel=1e-12)  # the rollouts' elites: their mean
    assert kl([0, 1]) == pytest.approx((outer + middle) / 2, rel=1e-12)
    assert kl(None) == pytest.approx((2 * outer + middle) / 3, rel=1e-12)  # no elites given: every member


class StandIn:
    """The tiny ensemble above, its next state around obs; 2 of its 3 members are elites."""

    elites = torch.tensor(ELITES)

    def predict(self, obs, action):
        mean, std, _ = tensors(torch.float32)
        return mean + torch.cat([torch.zeros(B, 1), obs], -1), std


@pytest.mark.parametrize("kind", ["llv", "loo_kl"])
def test_model_step_penalises_with_the_transition_it_produced_and_its_elites(kind):
    """``llv`` reads the point model_step made (its next state); ``loo_kl`` scores the elites a step draws from."""
    obs = torch.tensor([[0.1, 0.2], [0.3, 0.4]])
    out = model_step(StandIn(), obs, torch.zeros(B, 1), ModelMDP(never, 0.5, kind),
                     torch.Generator().manual_seed(0))
    mean, std = StandIn().predict(obs, None)
    point = torch.cat([out["raw_reward"], out["observation"]], -1)
    expected = uncertainty_penalty(mean, std, kind, point, StandIn.elites)
    torch.testing.assert_close(out["penalty"].squeeze(-1), expected)
    torch.testing.assert_close(out["reward"], out["raw_reward"] - 0.5 * out["penalty"])
    if kind == "loo_kl":  # not the mean over all 3 members
        assert not torch.allclose(expected, uncertainty_penalty(mean, std, kind))


class Growing:
    """3 members whose spread and std grow with |s|: every penalty varies over the rows."""

    elites = torch.tensor([0, 1])

    def predict(self, obs, action):
        size = 1 + obs.abs().sum(-1, keepdim=True)  # [B, 1]
        reward = action.sum(-1, keepdim=True)
        mean = torch.stack([torch.cat([reward + 0.1 * i * size, obs + 0.2 * i * size], -1) for i in range(3)])
        std = torch.stack([0.1 * (i + 1) * size.expand(-1, 1 + obs.shape[1]) for i in range(3)])
        return mean, std


def test_scales_are_each_kinds_mean_and_95th_percentile_on_a_fixed_subsample():
    gen = torch.Generator().manual_seed(0)
    obs, action = torch.randn(500, 2, generator=gen), torch.randn(500, 1, generator=gen)
    model = Growing()
    record = measure_scales(model.predict, model.elites, obs, action)
    assert record["rows"] == 500 and scales_current(record) and set(record["kinds"]) == set(PENALTY_KINDS)
    mean, std = model.predict(obs, action)
    for kind in ("aleatoric", "ensemble_std", "loo_kl"):
        u = uncertainty_penalty(mean, std, kind, None, model.elites).double().numpy()
        assert record["kinds"][kind]["mean"] == pytest.approx(float(u.mean()), rel=1e-6)
        assert record["kinds"][kind]["p95"] == pytest.approx(float(np.percentile(u, 95)), rel=1e-6)
    for kind in PENALTY_KINDS:
        assert 0 < record["kinds"][kind]["mean"] < record["kinds"][kind]["p95"], kind
    again = measure_scales(model.predict, model.elites, obs, action)
    assert again == record  # fixed seeds: the llv point and the subsample repeat
    small = measure_scales(model.predict, model.elites, obs, action, max_rows=100)
    assert small["rows"] == 100 and small == measure_scales(model.predict, model.elites, obs, action, max_rows=100)
    assert small["kinds"]["aleatoric"] != record["kinds"]["aleatoric"]
    assert not scales_current({**record, "version": record["version"] + 1})
    assert not scales_current({**record, "version": 1})  # before next-state columns and loo_kl over the elites
    assert not scales_current({**record, "kinds": {k: v for k, v in record["kinds"].items() if k != "llv"}})
    assert not scales_current(None)


def test_the_llv_scale_holds_in_both_reward_modes():
    """measure_scales draws llv's point as model_step does (the same elite and noise for the same seed); the reward
    modes differ in its reward column only, which llv does not read, so the one stored record fits both."""
    gen = torch.Generator().manual_seed(0)
    obs, action = torch.randn(500, 2, generator=gen), torch.randn(500, 1, generator=gen)
    model = Growing()
    record = measure_scales(model.predict, model.elites, obs, action)
    mean, std = model.predict(obs, action)
    points = {mode: produced_transition(mean, std, model.elites, torch.Generator().manual_seed(0), mode)
              for mode in ("sample", "mean")}
    assert not torch.equal(points["sample"][:, 0], points["mean"][:, 0])
    torch.testing.assert_close(points["sample"][:, 1:], points["mean"][:, 1:], rtol=0, atol=0)
    for point in points.values():
        u = uncertainty_penalty(mean, std, "llv", point).double().numpy()
        assert record["kinds"]["llv"]["mean"] == pytest.approx(float(u.mean()), rel=1e-6)
        assert record["kinds"]["llv"]["p95"] == pytest.approx(float(np.percentile(u, 95)), rel=1e-6)


def test_lambda_in_a_kinds_units_divides_by_its_scale():
    scales = {"aleatoric": {"mean": 2.0, "p95": 4.0}, "llv": {"mean": 0.0, "p95": float("nan")}}
    assert penalty_coef_in_raw_units(3.0, "aleatoric", "raw", None) == 3.0
    assert penalty_coef_in_raw_units(3.0, "aleatoric", "mean", scales) == 1.5
    assert penalty_coef_in_raw_units(3.0, "aleatoric", "p95", scales) == 0.75
    for units, bad in (("p95", None), ("p95", {}), ("mean", scales), ("p95", scales)):
        with pytest.raises(ConfigError):
            penalty_coef_in_raw_units(3.0, "llv", units, bad)
    with pytest.raises(ConfigError, match="penalty_units"):
        penalty_coef_in_raw_units(3.0, "aleatoric", "median", scales)  # type: ignore[arg-type]


def _datamodule(**kwargs) -> OfflineDataModule:
    return OfflineDataModule(task="hopper", path="unused.hdf5", **kwargs)


def test_the_stage1_fingerprint_holds_no_mopo_setting():
    """Penalties, h and the rollouts are stage-2 settings (the ``mopo`` group): one trained model serves every
    kind, unit and lambda, because the fingerprint reads the data group and the dynamics group only."""
    from mopo_lightning.dynamics.fingerprint import CONFIG_KEYS

    fields = dynamics_fingerprint("a" * 64, _datamodule().hparams, {})
    for name in MOPOSettings.__dataclass_fields__:
        assert not any(name in field for field in fields), name
    assert not any(key.startswith("mopo.") for key in CONFIG_KEYS)
    key = fingerprint_key(fields)
    assert fingerprint_key(dynamics_fingerprint("a" * 64, _datamodule(seed=1).hparams, {})) != key  # not vacuous


def test_scales_travel_with_the_model_through_a_checkpoint(tmp_path: Path):
    module = DynamicsModule(obs_dim=2, act_dim=1, num_members=3, num_elites=2, hidden_dim=8, num_layers=1,
                            weight_decays=(0.0, 0.0))
    gen = torch.Generator().manual_seed(0)
    obs, action = torch.randn(64, 2, generator=gen), torch.randn(64, 1, generator=gen)
    module.fit_normalizer(torch.cat([obs, action], -1))
    module.penalty_scales = measure_scales(module.predict, module.ensemble.elites, obs, action)
    trainer = L.Trainer(logger=False, enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False, accelerator="cpu", devices=1)
    trainer.strategy.connect(module)
    trainer.save_checkpoint(tmp_path / "dynamics.ckpt", weights_only=True)
    loaded = load_dynamics(tmp_path / "dynamics.ckpt")
    assert loaded.penalty_scales == module.penalty_scales and scales_current(loaded.penalty_scales)
    remeasured = measure_scales(loaded.predict, loaded.ensemble.elites, obs, action)
    assert remeasured == module.penalty_scales  # the same model: the same numbers
