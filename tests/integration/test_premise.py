"""MOPO's premise on real MuJoCo transitions: a small ensemble trained on random HalfCheetah data.

One ensemble (5 members of 2 x 64, 800 Adam steps on 10,000 collected random-policy steps, ~5 s) is trained
once for the module; evaluations are 4 episodes of 30 steps.
"""

from __future__ import annotations

import json
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from conftest import collected_dataset
from lightning.pytorch.loggers import TensorBoardLogger

from mopo_lightning.callbacks.evaluation import MuJoCoEvaluation, evaluate_policy
from mopo_lightning.callbacks.premise import PremiseMonitor
from mopo_lightning.callbacks.results import RunResults
from mopo_lightning.data.d4rl import load_dataset
from mopo_lightning.dynamics.ensemble import GaussianEnsemble
from mopo_lightning.envs.premise import DataReference, PenaltySettings, premise_metrics
from mopo_lightning.envs.wrappers import make_env
from mopo_lightning.tasks import get_task
from mopo_lightning.transitions import ACTION, NEXT_OBSERVATION, OBSERVATION, REWARD

TASK = get_task("halfcheetah")
EPISODES, STEPS = 4, 30
ITERS = 800
SETTINGS = PenaltySettings(coef=1.0, kind="aleatoric", reward_mode="mean")
def bang_bang(obs: torch.Tensor) -> torch.Tensor:
    """Every joint at full torque, always: states the random data never visits."""
    return torch.ones(obs.shape[0], TASK.act_dim, device=obs.device)


@pytest.fixture(scope="module")
def data():
    return load_dataset(collected_dataset("halfcheetah", 10_000, seed=0), "halfcheetah")


@pytest.fixture(scope="module")
def ensemble(data):
    torch.manual_seed(0)
    model = GaussianEnsemble(TASK.obs_dim, TASK.act_dim, num_members=5, num_elites=3, hidden_dim=64, num_layers=2,
                             weight_decays=(2.5e-5, 5e-5, 1e-4))
    inputs = torch.cat([data[OBSERVATION], data[ACTION]], -1)
    targets = torch.cat([data[REWARD], data[NEXT_OBSERVATION] - data[OBSERVATION]], -1)
    model.fit_normalizer(inputs)
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    gen = torch.Generator().manual_seed(0)
    for _ in range(ITERS):
        idx = torch.randint(inputs.shape[0], (5, 256), generator=gen)  # one bootstrap batch per member
        nll, _ = model.nll_loss(inputs[idx], targets[idx])
        loss = nll + 0.01 * model.logvar_bound_loss()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    model.eval().requires_grad_(False)
    with torch.no_grad():
        mean, _ = model(inputs[-500:])
        mse = (mean - targets[-500:]).square().mean(dim=(1, 2))
    model.elites.copy_(mse.argsort()[:3])
    return model


@pytest.fixture(scope="module")
def reference(data):
    return DataReference.from_observations(data[OBSERVATION])


def evaluate(policy, record=True):
    return evaluate_policy(TASK, policy, list(range(EPISODES)), seed=123, max_episode_steps=STEPS, record=record)


@pytest.fixture(scope="module")
def behaviour_like(data, reference):
    """Stays in the data: the action the dataset took at the nearest dataset state."""
    actions = data[ACTION]

    def act(obs: torch.Tensor) -> torch.Tensor:
        return actions[torch.cdist((obs - reference.mean) / reference.std, reference.states).argmin(-1)]

    return act


@pytest.fixture(scope="module")
def in_data(behaviour_like):
    return evaluate(behaviour_like)


@pytest.fixture(scope="module")
def out_of_data():
    return evaluate(bang_bang)


def measure(ensemble, result, policy, reference=None):
    return premise_metrics(ensemble, result.transitions, termination_fn=TASK.termination_fn, settings=SETTINGS,
                           policy=policy, reference=reference)


def test_recorded_transitions_are_the_real_ones_episode_ends_included(in_data):
    td = in_data.transitions
    assert td.shape[0] == EPISODES * STEPS and in_data.lengths.tolist() == [STEPS] * EPISODES
    assert td["episode"].tolist() == sorted(td["episode"].tolist())
    np.testing.assert_allclose(td.get(REWARD).reshape(EPISODES, STEPS).sum(-1).double().numpy(), in_data.returns,
                               rtol=1e-5)
    assert bool(td["next", "truncated"].reshape(EPISODES, STEPS)[:, -1].all())
    for episode in (0, EPISODES - 1):  # replay the episode alone: every next state, the last one included
        rows = td[td["episode"] == episode]
        env = make_env(TASK, max_episode_steps=STEPS)
        obs, _ = env.reset(seed=123 + episode)
        np.testing.assert_allclose(rows[OBSERVATION][0].numpy(), obs, rtol=1e-6, atol=1e-6)
        for t in range(STEPS):
            obs, reward, *_ = env.step(rows[ACTION][t].numpy())
            np.testing.assert_allclose(rows[NEXT_OBSERVATION][t].numpy(), obs, rtol=1e-5, atol=1e-5)
            assert abs(float(rows[REWARD][t]) - reward) < 1e-4
        assert torch.equal(rows[OBSERVATION][1:], rows[NEXT_OBSERVATION][:-1])
        env.close()


def test_figures_are_finite_in_range_and_the_error_is_the_real_one_row_by_row(ensemble, in_data, reference,
                                                                             behaviour_like):
    premise = measure(ensemble, in_data, behaviour_like, reference)
    s = premise.scalars
    assert all(np.isfinite(v) for v in s.values()), s
    for kind in ("aleatoric", "disagreement"):
        assert -1 <= s[f"{kind}/spearman"] <= 1 and 0 <= s[f"{kind}/violation_rate"] <= 1
        assert s[f"{kind}/penalty_mean"] > 0
    assert s["spearman"] == s["aleatoric/spearman"] and s["transitions"] == EPISODES * STEPS
    assert s["real_return"] == pytest.approx(float(in_data.returns.mean()), rel=1e-5)
    assert s["model_episode_length"] == s["real_episode_length"] == STEPS  # halfcheetah never terminates
    assert s["distance_to_data"] > 0
    td = in_data.transitions
    for row in (0, 57, STEPS - 1, 2 * STEPS + 13, EPISODES * STEPS - 1):  # by hand, one row at a time
        obs, act = td[OBSERVATION][row:row + 1], td[ACTION][row:row + 1]
        mean, std = ensemble.predict(obs, act)
        prediction = mean[ensemble.elites, 0].mean(0)  # [1 + O]: reward, next state
        truth = torch.cat([td[REWARD][row], td[NEXT_OBSERVATION][row]])
        assert float(premise.rows["model_error"][row]) == pytest.approx(float((prediction - truth).norm()), rel=1e-4)
        assert float(premise.rows["aleatoric/penalty"][row]) == pytest.approx(
            float(std[:, 0].norm(dim=-1).max()), rel=1e-5)
        mixture = torch.distributions.MixtureSameFamily(
            torch.distributions.Categorical(torch.ones(3)),
            torch.distributions.Independent(torch.distributions.Normal(mean[ensemble.elites, 0],
                                                                       std[ensemble.elites, 0]), 1))
        assert float(premise.rows["nll"][row]) == pytest.approx(-float(mixture.log_prob(truth)), rel=1e-4, abs=1e-3)
        error, u = premise.rows["aleatoric/error"][row], premise.rows["aleatoric/penalty"][row]
        assert bool(premise.rows["aleatoric/violated"][row]) == bool(error > u)


def test_a_corrupted_model_raises_the_true_error_and_the_return_gap(ensemble, in_data, behaviour_like):
    clean = measure(ensemble, in_data, behaviour_like).scalars
    corrupted = GaussianEnsemble(TASK.obs_dim, TASK.act_dim, num_members=5, num_elites=3, hidden_dim=64,
                                 num_layers=2, weight_decays=(2.5e-5, 5e-5, 1e-4))
    corrupted.load_state_dict(ensemble.state_dict())
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for w in corrupted.weights:
            w.add_(w.std() * torch.randn(w.shape, generator=gen))
    bad = measure(corrupted.eval(), in_data, behaviour_like).scalars
    assert bad["model_error_mean"] > 2 * clean["model_error_mean"], (bad["model_error_mean"], clean["model_error_mean"])
    assert bad["nll"] > clean["nll"]
    assert abs(bad["return_gap_raw"]) > 2 * abs(clean["return_gap_raw"]), (bad["return_gap_raw"],
                                                                           clean["return_gap_raw"])


def test_penalised_model_return_is_closer_to_the_real_one_in_the_data(ensemble, in_data, out_of_data, reference,
                                                                      behaviour_like):
    near = measure(ensemble, in_data, behaviour_like, reference).scalars
    far = measure(ensemble, out_of_data, bang_bang, reference).scalars
    assert far["distance_to_data"] > 2 * near["distance_to_data"], (far["distance_to_data"],
                                                                    near["distance_to_data"])
    for kind in ("aleatoric", "disagreement"):  # MOPO's premise: the gap grows as the policy leaves the data
        assert far[f"{kind}/return_gap"] < near[f"{kind}/return_gap"] < 0, (kind, far, near)
    assert far["disagreement/penalty_mean"] > near["disagreement/penalty_mean"]


def test_the_monitor_logs_tensorboard_scalars_images_and_results_json(ensemble, data, tmp_path):
    """The callback's hook on a stand-in trainer: premise/ scalars and figures, and results.json entries."""
    evaluation = MuJoCoEvaluation(num_episodes=2, max_episode_steps=30, task="halfcheetah")
    monitor = PremiseMonitor()
    logger = TensorBoardLogger(tmp_path, name="tb", version="sac")
    datamodule = SimpleNamespace(ensemble=ensemble, real=data, task_spec=TASK,
                                 hparams=SimpleNamespace(penalty_coef=1.0, penalty_kind="disagreement",
                                                         reward_mode="sample"))
    results = RunResults(tmp_path / "results.json", {"task": "halfcheetah"})
    trainer = SimpleNamespace(callbacks=[evaluation, monitor, results], world_size=1, global_rank=0,
                              is_global_zero=True, datamodule=datamodule, logger=logger, sanity_checking=False,
                              current_epoch=0, global_step=0)
    actor = torch.nn.Linear(TASK.obs_dim, TASK.act_dim)
    module = SimpleNamespace(training=False, device=torch.device("cpu"), sac_updates=torch.tensor(7),
                             eval=lambda: None, train=lambda mode=True: None,
                             act=lambda obs, deterministic: torch.tanh(actor(obs)),
                             log_dict=lambda *a, **k: None, log=lambda *a, **k: None)
    monitor.setup(trainer, module, "fit")
    assert evaluation.listeners == [monitor]
    evaluation.on_train_epoch_end(trainer, module)
    results.on_train_epoch_end(trainer, module)
    logger.experiment.flush()

    entry = json.loads((tmp_path / "results.json").read_text())["evaluations"][-1]
    assert entry["sac_updates"] == 7 and entry["premise"]["penalty_kind"] == "disagreement"
    assert entry["premise"]["spearman"] == entry["premise"]["disagreement/spearman"]
    assert entry["premise"]["real_return"] == pytest.approx(entry["return_mean"])
    assert json.loads((tmp_path / "results.json").read_text())["final_premise"] == entry["premise"]

    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(logger.log_dir, size_guidance={"images": 0})
    events.Reload()
    scalars = set(events.Tags()["scalars"])
    for tag in ("premise/spearman", "premise/violation_rate", "premise/model_error_mean", "premise/nll",
                "premise/model_return_penalized", "premise/model_return_raw", "premise/real_return",
                "premise/return_gap", "premise/distance_to_data", "premise/aleatoric/spearman",
                "premise/disagreement/violation_rate"):
        assert tag in scalars, tag
        assert events.Scalars(tag)[0].step == 7
    images = events.Tags()["images"]
    assert {"premise/calibration", "premise/scatter"} <= set(images)
    png = events.Images("premise/calibration")[0].encoded_image_string
    assert png.startswith(b"\x89PNG") and len(png) > 5_000
