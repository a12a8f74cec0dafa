"""ModelMDP: the penalised model MDP built once per run, lambda converted to raw units there alone, and the one
object every model step reads (rollouts, env, ``model_step``)."""

from __future__ import annotations

import ast
import dataclasses
import inspect
from pathlib import Path

import pytest
import torch

from mopo_lightning.envs.tasks import get_task
from mopo_lightning.envs.termination import never
from mopo_lightning.guards import ConfigError
from mopo_lightning.model_env.mdp import ModelMDP
from mopo_lightning.model_env.penalties import PENALTY_KINDS
from mopo_lightning.model_env.rollouts import ModelRollouts, RolloutSchedule
from mopo_lightning.model_env.settings import MOPOSettings

PACKAGE = Path(__file__).resolve().parents[2] / "mopo_lightning"
SCALES = {kind: {"mean": 1.0, "p95": float(i + 1)} for i, kind in enumerate(PENALTY_KINDS)}


def test_from_settings_weighs_each_kind_in_the_runs_units():
    mopo = MOPOSettings(penalty_coef=2.0, penalty_kind="loo_kl", reward_mode="mean", penalty_units="p95",
                        rollout_length=3)
    mdp = ModelMDP.from_settings(mopo, SCALES, get_task("hopper"))
    assert mdp.penalty_coef_raw == 2.0 / SCALES["loo_kl"]["p95"]
    assert (mdp.penalty_kind, mdp.reward_mode, mdp.rollout_length) == ("loo_kl", "mean", 3)
    assert mdp.termination_fn is get_task("hopper").termination_fn
    assert list(mdp.penalty_coefs_raw.items()) == [(kind, 2.0 / (i + 1)) for i, kind in enumerate(PENALTY_KINDS)]
    assert [mdp.penalty_coef_raw_for(kind) for kind in PENALTY_KINDS] == list(mdp.penalty_coefs_raw.values())
    mean = ModelMDP.from_settings(dataclasses.replace(mopo, penalty_units="mean"), SCALES, get_task("hopper"))
    assert set(mean.penalty_coefs_raw.values()) == {2.0}
    raw = ModelMDP.from_settings(dataclasses.replace(mopo, penalty_units="raw"), None, get_task("hopper"))
    assert raw.penalty_coef_raw == 2.0 and set(raw.penalty_coefs_raw.values()) == {2.0}  # the paper's lambda
    # a kind not listed falls back to the trained lambda
    assert ModelMDP(never, 0.5, "llv").penalty_coef_raw_for("aleatoric") == 0.5


def test_a_scale_that_cannot_carry_lambda_is_refused_the_trained_kind_first():
    bad = {**SCALES, "aleatoric": {"mean": 0.0, "p95": 0.0}, "llv": {"mean": float("nan"), "p95": 1.0}}
    mopo = MOPOSettings(penalty_kind="llv", penalty_units="mean")
    with pytest.raises(ConfigError, match="llv penalty's mean"):
        ModelMDP.from_settings(mopo, bad, get_task("hopper"))
    with pytest.raises(ConfigError, match="needs the model's"):
        ModelMDP.from_settings(mopo, None, get_task("hopper"))


def test_the_mdp_is_a_frozen_value():
    mdp = ModelMDP(never, 1.0, rollout_length=2)
    with pytest.raises(dataclasses.FrozenInstanceError):
        mdp.penalty_coef_raw = 2.0  # type: ignore[misc]
    with pytest.raises(ConfigError, match="rollout_length"):
        ModelMDP(never, 1.0, rollout_length=0)


def test_lambda_is_converted_to_raw_units_in_one_place():
    """``penalty_coef_in_raw_units`` has one caller in the package: ``ModelMDP.from_settings``."""
    callers = []
    for path in PACKAGE.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call):
                name = getattr(node.func, "id", getattr(node.func, "attr", None))
                if name == "penalty_coef_in_raw_units":
                    callers.append(path.relative_to(PACKAGE).as_posix())
    assert callers == ["model_env/mdp.py"]


class Drift:
    """Every member predicts reward 1 (std 0.5) and s' = s + 1 exactly: u (aleatoric) = 0.5."""

    elites = torch.tensor([0, 1])

    def to(self, device):
        return self

    def predict(self, obs, action):
        mean = torch.cat([torch.ones(obs.shape[0], 1), obs + 1], -1).expand(3, -1, -1)
        std = torch.zeros_like(mean)
        std[..., 0] = 0.5
        return mean, std


def test_rollouts_step_the_mdp_they_are_given():
    """h, lambda, the reward mode and the termination all come from the one ``ModelMDP``."""
    assert len(inspect.signature(ModelRollouts).parameters) <= 8
    def stop_above_2(obs, action, next_obs):
        return next_obs[:, 0] > 2.5

    mdp = ModelMDP(stop_above_2, 0.25, "aleatoric", "mean", rollout_length=4)
    schedule = RolloutSchedule(rollout_batch_size=7, rollout_freq=10, model_retain_epochs=2, updates_per_epoch=25)
    rollouts = ModelRollouts(torch.zeros(5, 2), 1, mdp, schedule, sample_size=3, generator=torch.Generator())
    assert rollouts.share == 7 and rollouts.rollouts_per_epoch == 3 and rollouts.capacity == 2 * 3 * 4 * 7
    rollouts.attach(Drift())
    stats = rollouts.rollout(lambda td: td.set("action", torch.zeros(td.shape[0], 1)))
    rows = rollouts.buffer[:]
    u = 0.5
    assert len(rows) == 7 * 3  # s = 0, 1, 2: the third step's s' = 3 terminates, h = 4 is not reached
    torch.testing.assert_close(rows["next", "reward"], torch.full((21, 1), 1.0 - 0.25 * u))  # the mean reward
    assert stats.scalars["rollout/penalty_mean"] == pytest.approx(u)
    assert int(rows["next", "terminated"].sum()) == 7
