"""MOPO's premise on real MuJoCo transitions: a small ensemble trained on random HalfCheetah data.

One ensemble (5 members of 2 x 64, 800 Adam steps on 10,000 collected random-policy steps, ~5 s) is trained
once for the module; evaluations are 4 episodes of 30 steps; H-step returns with H = 5.
"""

from __future__ import annotations

import json

import lightning as L
import numpy as np
import pytest
import torch
from conftest import collected_dataset, train_tiny_ensemble
from lightning.pytorch.loggers import TensorBoardLogger

from mopo_lightning.callbacks.evaluation import MuJoCoEvaluation, evaluate_policy
from mopo_lightning.callbacks.premise import PremiseMonitor
from mopo_lightning.callbacks.results import RunResults
from mopo_lightning.data.d4rl import load_dataset
from mopo_lightning.diagnostics.premise import DataReference, premise_metrics
from mopo_lightning.dynamics.ensemble import GaussianEnsemble
from mopo_lightning.envs.tasks import get_task
from mopo_lightning.envs.wrappers import make_env
from mopo_lightning.model_env.mdp import ModelMDP
from mopo_lightning.model_env.settings import MOPOSettings
from mopo_lightning.transitions import ACTION, NEXT_OBSERVATION, OBSERVATION, REWARD

TASK = get_task("halfcheetah")
EPISODES, STEPS = 4, 30
ITERS = 800
HORIZON = 5
MDP = ModelMDP(TASK.termination_fn, penalty_coef_raw=1.0, penalty_kind="aleatoric", reward_mode="mean",
               rollout_length=HORIZON)


def bang_bang(obs: torch.Tensor) -> torch.Tensor:
    """Every joint at full torque, always: states the random data never visits."""
    return torch.ones(obs.shape[0], TASK.act_dim, device=obs.device)


@pytest.fixture(scope="module")
def data():
    return load_dataset(collected_dataset("halfcheetah", 10_000, seed=0), "halfcheetah")


@pytest.fixture(scope="module")
def ensemble(data):
    return train_tiny_ensemble(data, TASK, iters=ITERS, holdout=500)


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
    return premise_metrics(ensemble, result.transitions, mdp=MDP, policy=policy, reference=reference)


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
        assert 0 <= s[f"{kind}/penalized_below_real"] <= 1 and s[f"{kind}/penalty_mean"] > 0
    assert s["spearman"] == s["aleatoric/spearman"] and s["transitions"] == s["rows_measured"] == EPISODES * STEPS
    # halfcheetah never terminates: a start state needs H real steps after it
    assert s["rollout_length"] == HORIZON and s["start_states"] == EPISODES * (STEPS - HORIZON + 1)
    assert s["model_steps"] == s["real_steps"] == HORIZON and s["model_diverged"] == 0
    rewards = in_data.transitions[REWARD].reshape(EPISODES, STEPS).double()
    windows = rewards.unfold(1, HORIZON, 1).sum(-1)  # [EPISODES, STEPS - H + 1]: every real H-step return
    assert s["real_return"] == pytest.approx(float(windows.mean()), rel=1e-6)
    torch.testing.assert_close(premise.rows["return/real"], windows.reshape(-1))
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


def corrupt(ensemble: GaussianEnsemble) -> GaussianEnsemble:
    """The same ensemble with every weight matrix shaken by one standard deviation of noise (fixed seed)."""
    corrupted = GaussianEnsemble(TASK.obs_dim, TASK.act_dim, num_members=5, num_elites=3, hidden_dim=64,
                                 num_layers=2, weight_decays=(2.5e-5, 5e-5, 1e-4))
    corrupted.load_state_dict(ensemble.state_dict())
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for w in corrupted.weights:
            w.add_(w.std() * torch.randn(w.shape, generator=gen))
    return corrupted.eval()


def test_a_corrupted_model_raises_the_true_error_and_the_return_gap(ensemble, in_data, behaviour_like):
    clean = measure(ensemble, in_data, behaviour_like).scalars
    bad = measure(corrupt(ensemble), in_data, behaviour_like).scalars
    assert bad["real_return"] == clean["real_return"]  # the same real windows
    assert bad["model_error_mean"] > 2 * clean["model_error_mean"], (bad["model_error_mean"], clean["model_error_mean"])
    assert bad["nll"] > clean["nll"]
    for name in ("return_gap_raw", "return_gap"):
        assert abs(bad[name]) > 2 * abs(clean[name]), (name, bad[name], clean[name])


def test_penalised_model_return_is_closer_to_the_real_one_in_the_data(ensemble, in_data, out_of_data, reference,
                                                                      behaviour_like):
    """H-step returns from the visited states of a policy that stays in the data against one that leaves it.

    The disagreement penalty grows off the data, so its penalised return stays below the real one in both
    and is closer to it in the data; the raw model return is close in the data and optimistic off it.
    (This small ensemble's aleatoric std does not grow off the data, so that kind is not compared.)
    """
    near = measure(ensemble, in_data, behaviour_like, reference).scalars
    far = measure(ensemble, out_of_data, bang_bang, reference).scalars
    assert far["distance_to_data"] > 2 * near["distance_to_data"], (far["distance_to_data"],
                                                                    near["distance_to_data"])
    assert far["disagreement/penalty_mean"] > 1.5 * near["disagreement/penalty_mean"]
    assert far["disagreement/return_gap"] < 1.3 * near["disagreement/return_gap"] < 0, (far, near)
    assert near["disagreement/penalized_below_real"] == far["disagreement/penalized_below_real"] == 1
    assert abs(near["return_gap_raw"]) < 0.25 * far["return_gap_raw"], (near["return_gap_raw"], far["return_gap_raw"])


class TinyPolicy(L.LightningModule):
    """One "SAC update" per batch (``sac_updates`` counts them, as ``SACModule``); acts with a linear layer."""

    def __init__(self) -> None:
        super().__init__()
        self.automatic_optimization = False
        self.actor = torch.nn.Linear(TASK.obs_dim, TASK.act_dim)
        self.register_buffer("sac_updates", torch.zeros((), dtype=torch.long))

    def act(self, obs: torch.Tensor, deterministic: bool = True) -> torch.Tensor:
        return torch.tanh(self.actor(obs))

    def training_step(self, batch, batch_idx):
        self.sac_updates += 1

    def configure_optimizers(self):
        return None


class TinyData(L.LightningDataModule):
    """Three batches an epoch: the monitor reads nothing of the data module (its collaborators are handed in)."""

    def train_dataloader(self):
        return torch.utils.data.DataLoader(torch.zeros(3, 1), batch_size=1)


@pytest.mark.filterwarnings("ignore:`LightningModule.configure_optimizers` returned `None`")
def test_the_monitor_in_a_real_fit_logs_at_the_eval_step_with_images_and_results_json(ensemble, data, tmp_path):
    """Two epochs of 3 batches: premise/* scalars and the figure at the x of eval/*, results.json entries.

    Collaborators go in through the constructors, so the Trainer's callback order does not matter: here the
    results and the monitor come before the evaluation they depend on."""
    mopo = MOPOSettings(penalty_coef=1.0, penalty_kind="disagreement", reward_mode="sample", rollout_length=3)
    collaborators = {"ensemble": ensemble, "data_observations": data["observation"],
                     "mdp": ModelMDP.from_settings(mopo, None, TASK)}
    monitor = PremiseMonitor(max_data_states=2_000, **collaborators)
    assert monitor.rollout_length == 3  # None: the run's h
    results = RunResults(tmp_path / "results.json", {"task": "halfcheetah"})
    evaluation = MuJoCoEvaluation(num_episodes=2, max_episode_steps=30, task="halfcheetah", listeners=[monitor],
                                  results=results)
    logger = TensorBoardLogger(tmp_path, name="tb", version="sac")
    trainer = L.Trainer(max_epochs=2, limit_train_batches=3, logger=logger, callbacks=[results, monitor, evaluation],
                        accelerator="cpu", devices=1, enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False, num_sanity_val_steps=0, log_every_n_steps=1)
    trainer.fit(TinyPolicy(), datamodule=TinyData())
    assert evaluation.listeners == (monitor,)
    assert PremiseMonitor(**collaborators, rollout_length=2).rollout_length == 2

    saved = json.loads((tmp_path / "results.json").read_text())
    entry = saved["evaluations"][-1]
    assert [e["sac_updates"] for e in saved["evaluations"]] == [3, 6]
    assert entry["premise"]["penalty_kind"] == "disagreement"
    assert entry["premise"]["rollout_length"] == 3  # rollout_length
    assert entry["premise"]["spearman"] == entry["premise"]["disagreement/spearman"]
    assert entry["premise"]["start_states"] == 2 * (30 - 3 + 1)
    assert saved["final_premise"] == entry["premise"]

    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(logger.log_dir, size_guidance={"images": 0, "scalars": 0})
    events.Reload()
    eval_steps = [e.step for e in events.Scalars("eval/return_mean")]
    assert eval_steps == [2, 5]  # Lightning: epoch-end metrics at the epoch's last batch index
    scalars = set(events.Tags()["scalars"])
    for tag in ("premise/spearman", "premise/violation_rate", "premise/model_error_mean", "premise/nll",
                "premise/model_return_penalized", "premise/model_return_raw", "premise/real_return",
                "premise/return_gap", "premise/return_gap_raw", "premise/penalized_below_real",
                "premise/rollout_length", "premise/distance_to_data", "premise/aleatoric/spearman",
                "premise/disagreement/violation_rate"):
        assert tag in scalars, tag
        assert [e.step for e in events.Scalars(tag)] == eval_steps, tag
    # every penalty kind is measured at every evaluation, whichever trains, under its own namespace
    from mopo_lightning.model_env.penalties import PENALTY_KINDS

    assert entry["premise"]["penalty_coefs"] == {kind: 1.0 for kind in PENALTY_KINDS}  # raw units: one lambda
    for kind in PENALTY_KINDS:
        for name in ("spearman", "violation_rate", "return_gap", "penalty_mean", "penalized_below_real"):
            assert f"{kind}/{name}" in entry["premise"], (kind, name)
            assert [e.step for e in events.Scalars(f"premise/{kind}/{name}")] == eval_steps, (kind, name)
    assert events.Scalars("premise/return_gap")[-1].value == pytest.approx(entry["premise"]["return_gap"], rel=1e-6)
    assert [e.step for e in events.Images("premise/calibration")] == eval_steps
    png = events.Images("premise/calibration")[-1].encoded_image_string
    assert png.startswith(b"\x89PNG") and len(png) > 5_000
