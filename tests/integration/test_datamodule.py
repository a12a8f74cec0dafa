"""D4RLDataModule: real/model mix, FIFO model buffer, rollout schedule, terminal rows, on real MuJoCo data."""

from __future__ import annotations

import lightning as L
import pytest
import torch
from tensordict import TensorDict
from tensordict.nn import TensorDictModule

from mopo_lightning.training.datamodule import D4RLDataModule
from mopo_lightning.dynamics.ensemble import GaussianEnsemble
from mopo_lightning.policy.sac import SACModule
from conftest import collected_dataset


def _random_policy(act_dim: int, seed: int = 0) -> TensorDictModule:
    g = torch.Generator().manual_seed(seed)

    def act(obs: torch.Tensor) -> torch.Tensor:
        return torch.rand(obs.shape[0], act_dim, generator=g) * 2 - 1

    return TensorDictModule(act, in_keys=["observation"], out_keys=["action"])


def _datamodule(task: str, path, **overrides) -> D4RLDataModule:
    kwargs = dict(task=task, path=str(path), batch_size=256, real_ratio=0.05, rollout_length=3,
                  rollout_batch_size=100, model_retain_epochs=2, rollout_freq=10, updates_per_epoch=25, seed=0)
    kwargs.update(overrides)
    dm = D4RLDataModule(**kwargs)
    dm.setup("fit")
    ensemble = GaussianEnsemble(dm.obs_dim, dm.act_dim, num_members=3, num_elites=2, hidden_dim=32)
    inputs = torch.cat([dm.real["observation"], dm.real["action"]], -1)
    ensemble.fit_normalizer(inputs)
    dm.attach_dynamics(ensemble)
    return dm


def _rows(td: TensorDict) -> set[tuple[float, ...]]:
    """Rows identified by (observation, action): start states repeat across rollouts, actions do not."""
    return {tuple(r) for r in torch.cat([td["observation"], td["action"]], -1).tolist()}


@pytest.fixture(scope="module")
def cheetah_path():
    return collected_dataset("halfcheetah", 1_000, seed=0)


def test_batch_mixes_real_and_model_rows_in_ratio(cheetah_path):
    dm = _datamodule("halfcheetah", cheetah_path)
    dm.model_rollouts().rollout(_random_policy(dm.act_dim))
    batch = dm.sample_batch()
    assert batch.shape == (256,)
    assert dm.n_real == 12  # int(256 * 0.05), as the authors' code
    real_rows, model_rows = _rows(dm.real), _rows(dm.rollouts.buffer[:])
    head, tail = batch[:12], batch[12:]
    assert _rows(head) <= real_rows
    assert _rows(tail) <= model_rows
    assert not (_rows(tail) & real_rows) - model_rows  # every model-part row comes from the buffer


def test_real_ratio_zero_and_one(cheetah_path):
    dm = _datamodule("halfcheetah", cheetah_path, real_ratio=0.0)
    dm.model_rollouts().rollout(_random_policy(dm.act_dim))
    assert _rows(dm.sample_batch()) <= _rows(dm.rollouts.buffer[:])
    dm = _datamodule("halfcheetah", cheetah_path, real_ratio=1.0)
    dm.model_rollouts().rollout(_random_policy(dm.act_dim))
    assert _rows(dm.sample_batch()) <= _rows(dm.real)


def test_model_buffer_is_fifo_with_retain_epochs(cheetah_path):
    dm = _datamodule("halfcheetah", cheetah_path)  # halfcheetah never terminates: 100 x 3 rows per rollout
    policy = _random_policy(dm.act_dim)
    dm.model_rollouts().rollout(policy)
    first = _rows(dm.rollouts.buffer[:])
    assert len(dm.rollouts) == 300
    dm.model_rollouts().rollout(policy)
    assert len(dm.rollouts) == 600 and first <= _rows(dm.rollouts.buffer[:])
    dm.model_rollouts().rollout(policy)  # capacity 2 rollouts: the first is evicted, the second kept
    assert len(dm.rollouts) == 600
    assert not (first & _rows(dm.rollouts.buffer[:]))


def test_terminated_rows_stop_and_terminal_transitions_are_stored():
    dm = _datamodule("hopper", collected_dataset("hopper", 2_000, seed=0), rollout_batch_size=400,
                     rollout_length=4)
    stats = dm.model_rollouts().rollout(_random_policy(dm.act_dim)).scalars
    data = dm.rollouts.buffer[:]
    terminated = data["next", "terminated"].squeeze(-1)
    # An untrained model drifts hopper states out of the healthy range: some rows end early.
    assert terminated.any()
    assert len(data) < 400 * 4
    assert stats["rollout/termination_rate"] > 0
    # A stored terminal row's next state is unhealthy, and no stored row starts from one.
    term_fn = dm.task_spec.termination_fn
    assert torch.equal(term_fn(data["observation"], data["action"], data["next", "observation"]), terminated)
    assert not term_fn(data["observation"], data["action"], data["observation"]).any()


def test_rollout_schedule_in_training(cheetah_path):
    dm = _datamodule("halfcheetah", cheetah_path, updates_per_epoch=25, rollout_freq=10)
    calls: list[int] = []
    rollouts = dm.model_rollouts()
    original = rollouts.rollout

    def counting_rollout(policy, updates=0, device="cpu"):
        calls.append(int(module.sac_updates))
        return original(policy, updates, device)

    rollouts.rollout = counting_rollout
    module = SACModule(dm.obs_dim, dm.act_dim, hidden_dim=32)
    dm.bind_learner(module)
    trainer = L.Trainer(max_epochs=2, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False, accelerator="cpu", devices=1)
    trainer.fit(module, datamodule=dm)
    assert int(module.sac_updates) == 50
    # Rollouts before batches 0, 10, 20, 30, 40 (Lightning fetches one batch ahead, so the actor that
    # rolls out has made at most one update fewer than the batch index).
    assert len(calls) == 5
    for expected, got in zip([0, 10, 20, 30, 40], calls):
        assert expected - 1 <= got <= expected
