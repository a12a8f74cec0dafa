"""DynamicsModule on real random-policy Hopper data: learning, MOPO's premise, checkpoints, logging.

One ensemble is trained once for the module (20k transitions, capped at 40 epochs so that the file stays
near a minute of CPU time) and shared by the tests.
"""

from __future__ import annotations

import h5py
import lightning.pytorch as pl
import numpy as np
import pytest
import torch
from conftest import collected_dataset
from lightning.pytorch.loggers import TensorBoardLogger
from scipy.stats import spearmanr

from mopo_lightning.data.d4rl import load_dataset
from mopo_lightning.dynamics.batches import dynamics_dataloaders
from mopo_lightning.dynamics.module import DynamicsModule, load_dynamics
from mopo_lightning.envs.wrappers import make_env

EPOCHS = 40


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    torch.manual_seed(0)
    td = load_dataset(collected_dataset("hopper", 20_000, seed=0), "hopper")
    data = dynamics_dataloaders(td, seed=0)
    module = DynamicsModule(obs_dim=11, act_dim=3, max_epochs=EPOCHS)
    log_dir = tmp_path_factory.mktemp("tb")
    trainer = pl.Trainer(
        max_epochs=-1, logger=TensorBoardLogger(log_dir, name="dyn"), enable_checkpointing=False,
        enable_progress_bar=False, enable_model_summary=False, accelerator="cpu", log_every_n_steps=10,
    )
    trainer.fit(module, train_dataloaders=data.train, val_dataloaders=data.holdout)
    module.eval()
    return module, data, trainer


def _state_mse(pred: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """[..., H, 1 + O] predictions of [r, s' - s] -> next-state MSE over the last two dims."""
    return (pred[..., 1:] - targets[..., 1:]).square().mean(dim=(-1, -2))


def test_training_stops_at_the_cap_restores_best_weights_and_picks_elites(trained):
    module, data, _ = trained
    es = module.early_stopping
    assert int(es.epochs) == EPOCHS and bool(module.finalized)
    with torch.no_grad():
        mean, _ = module.ensemble(data.holdout_inputs)  # [E, H, out]
    mse = (mean - data.holdout_targets).square().mean(dim=(1, 2)).double()
    torch.testing.assert_close(mse, es.best_mse, rtol=1e-5, atol=0)  # restored weights score their best
    assert module.ensemble.elites.tolist() == torch.argsort(es.best_mse)[:5].tolist()
    assert bool(module.ensemble.normalizer_fitted)
    torch.testing.assert_close(module.ensemble.input_mean, data.train_inputs.mean(0))


def test_elites_beat_linear_least_squares_three_times(trained):
    module, data, _ = trained
    ones = torch.ones(data.train_inputs.shape[0], 1)
    solution = torch.linalg.lstsq(
        torch.cat([data.train_inputs, ones], 1).double(), data.train_targets.double()
    ).solution
    ho = torch.cat([data.holdout_inputs, torch.ones(data.holdout_inputs.shape[0], 1)], 1).double()
    linear_mse = float(_state_mse((ho @ solution).float(), data.holdout_targets))
    with torch.no_grad():
        mean, _ = module.ensemble(data.holdout_inputs)
    elite_mse = float(_state_mse(mean[module.ensemble.elites], data.holdout_targets).mean())
    assert linear_mse / elite_mse >= 3.0, (linear_mse, elite_mse)


def _perturbed_transitions(n: int = 400, seed: int = 0):
    """Held-out Hopper states pushed away from the data, stepped in the real simulator.

    Returns obs [n, O], action [n, A], true [r, s'] [n, 1 + O] and the perturbation scale [n].
    """
    with h5py.File(collected_dataset("hopper", 2_000, seed=1), "r") as f:  # not the training data
        obs_data, act_data = f["observations"][:], f["actions"][:]
        qpos_data, qvel_data = f["infos/qpos"][:], f["infos/qvel"][:]
    rng = np.random.default_rng(seed)
    rows = rng.choice(len(obs_data), size=n, replace=False)
    scale = 10 ** rng.uniform(-2.5, 0.5, size=n)  # 0.003 .. 3 data standard deviations
    qpos_std, qvel_std = qpos_data.std(0), qvel_data.std(0)
    env = make_env("hopper")
    env.reset(seed=seed)
    sim = env.unwrapped
    obs, act, truth = [], [], []
    for i, row in enumerate(rows):
        sim.set_state(qpos_data[row], qvel_data[row])
        np.testing.assert_allclose(sim._get_obs(), obs_data[row], rtol=1e-5, atol=1e-5)  # infos line up
        qpos = qpos_data[row] + scale[i] * qpos_std * rng.standard_normal(qpos_std.shape)
        qvel = qvel_data[row] + scale[i] * qvel_std * rng.standard_normal(qvel_std.shape)
        sim.set_state(qpos, qvel)
        o = sim._get_obs()
        next_obs, reward, *_ = sim.step(act_data[row])
        obs.append(o)
        act.append(act_data[row])
        truth.append(np.concatenate([[reward], next_obs]))
    env.close()
    def as_t(x):
        return torch.as_tensor(np.asarray(x), dtype=torch.float32)

    return as_t(obs), as_t(act), as_t(truth), scale


def test_penalty_ranks_true_model_error_on_perturbed_states(trained):
    module, _, _ = trained
    obs, act, truth, _ = _perturbed_transitions()
    mean, std = module.predict(obs, act)  # [E, n, 1 + O]
    penalty = std.norm(dim=-1).amax(dim=0)  # MOPO's u(s, a) = max_i ||sigma_i||_2, over all members
    model = mean[module.ensemble.elites].mean(dim=0)  # [n, 1 + O]
    error = (model - truth).norm(dim=-1)
    rho = spearmanr(penalty.numpy(), error.numpy()).statistic
    assert rho >= 0.5, rho


def test_checkpoint_round_trip_reproduces_predictions_exactly(trained, tmp_path):
    module, data, trainer = trained
    path = tmp_path / "dynamics.ckpt"
    trainer.save_checkpoint(path)
    raw = torch.load(path, weights_only=True)  # plain tensors and builtins only
    assert raw["hyper_parameters"]["num_elites"] == 5
    assert "early_stopping.best_mse" in raw["state_dict"] and "snapshot.param_0" in raw["state_dict"]

    loaded = load_dynamics(path)
    obs, act = data.holdout_inputs[:, :11], data.holdout_inputs[:, 11:]
    before, after = module.predict(obs, act), loaded.predict(obs, act)
    assert torch.equal(before[0], after[0]) and torch.equal(before[1], after[1])
    assert torch.equal(loaded.ensemble.elites, module.ensemble.elites)
    assert torch.equal(loaded.early_stopping.best_mse, module.early_stopping.best_mse)
    assert loaded.hparams == module.hparams


def test_tensorboard_holds_the_dynamics_scalars(trained):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    _, _, trainer = trained
    events = EventAccumulator(trainer.logger.log_dir)
    events.Reload()
    tags = set(events.Tags()["scalars"])
    expected = {"dynamics/train_nll", "dynamics/holdout_mse/elites", "dynamics/max_logvar", "dynamics/min_logvar"}
    expected |= {f"dynamics/holdout_mse/member_{i}" for i in range(7)}
    assert expected <= tags, expected - tags
    assert len(events.Scalars("dynamics/holdout_mse/member_0")) == EPOCHS  # the sanity check logs nothing
    # the elites are indices, not curves: one text line at the end, no scalar per rank
    assert not [tag for tag in tags if tag.startswith("dynamics/elites")]
    assert "dynamics/elites/text_summary" in events.Tags()["tensors"]  # add_text's tag
