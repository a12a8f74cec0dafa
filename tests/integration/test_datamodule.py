"""The data side on real MuJoCo data: OfflineDataModule (rows, max_rows, stage-1 split), MixedDataModule (real/model
mix, FIFO model buffer, rollout schedule, terminal rows) and collect-if-missing."""

from __future__ import annotations

import math
import shutil

import lightning as L
import pytest
import torch
from conftest import collected_dataset
from tensordict import TensorDict
from tensordict.nn import TensorDictModule

from mopo_lightning.collection.missing import CollectIfMissing, collect_if_missing
from mopo_lightning.data.d4rl import load_dataset
from mopo_lightning.data.errors import DatasetError
from mopo_lightning.dynamics.ensemble import GaussianEnsemble
from mopo_lightning.envs.tasks import get_task
from mopo_lightning.model_env.mdp import ModelMDP
from mopo_lightning.model_env.settings import MOPOSettings
from mopo_lightning.policy.sac import SACModule
from mopo_lightning.training.datamodule import OfflineDataModule
from mopo_lightning.training.mixed_data import MixedDataModule


def _random_policy(act_dim: int, seed: int = 0) -> TensorDictModule:
    g = torch.Generator().manual_seed(seed)

    def act(obs: torch.Tensor) -> torch.Tensor:
        return torch.rand(obs.shape[0], act_dim, generator=g) * 2 - 1

    return TensorDictModule(act, in_keys=["observation"], out_keys=["action"])


class _NoLearner:
    """Tests that roll out by hand need no learner; the schedule test hands a real SACModule."""


def _mixed(data: OfflineDataModule, ensemble, mopo: MOPOSettings, learner) -> MixedDataModule:
    """The policy stage's data as the recipe builds it (raw lambda: no penalty scales needed)."""
    hp = data.hparams
    return MixedDataModule(data.rows(), data.task_spec, ensemble, ModelMDP.from_settings(mopo, None, data.task_spec),
                           mopo, learner, batch_size=hp.batch_size, updates_per_epoch=hp.updates_per_epoch,
                           seed=hp.seed)


def _datamodule(task: str, path, learner=None, max_rows=None, batch_size=256, updates_per_epoch=25,
                **mopo) -> MixedDataModule:
    mopo = MOPOSettings(**{"real_ratio": 0.05, "rollout_length": 3, "rollout_batch_size": 100,
                           "model_retain_epochs": 2, "rollout_freq": 10, **mopo})
    data = OfflineDataModule(task=task, path=str(path), batch_size=batch_size, updates_per_epoch=updates_per_epoch,
                             max_rows=max_rows, seed=0)
    data.setup("fit")
    ensemble = GaussianEnsemble(data.obs_dim, data.act_dim, num_members=3, num_elites=2, hidden_dim=32)
    inputs = torch.cat([data.real["observation"], data.real["action"]], -1)
    ensemble.fit_normalizer(inputs)
    dm = _mixed(data, ensemble, mopo, learner or _NoLearner())
    dm.setup()
    dm.offline = data
    return dm


def _rows(td: TensorDict) -> set[tuple[float, ...]]:
    """Rows identified by (observation, action): start states repeat across rollouts, actions do not."""
    return {tuple(r) for r in torch.cat([td["observation"], td["action"]], -1).tolist()}


@pytest.fixture(scope="module")
def cheetah_path():
    return collected_dataset("halfcheetah", 1_000, seed=0)


def test_batch_mixes_real_and_model_rows_in_ratio(cheetah_path):
    dm = _datamodule("halfcheetah", cheetah_path)
    dm.rollouts.rollout(_random_policy(dm.task.act_dim))
    batch = dm.sampler()
    assert batch.shape == (256,)
    assert dm.n_real == 12  # int(256 * 0.05), as the authors' code
    real_rows, model_rows = _rows(dm.real), _rows(dm.rollouts.buffer[:])
    head, tail = batch[:12], batch[12:]
    assert _rows(head) <= real_rows
    assert _rows(tail) <= model_rows
    assert not (_rows(tail) & real_rows) - model_rows  # every model-part row comes from the buffer


def test_real_ratio_zero_and_one(cheetah_path):
    dm = _datamodule("halfcheetah", cheetah_path, real_ratio=0.0)
    dm.rollouts.rollout(_random_policy(dm.task.act_dim))
    assert _rows(dm.sampler()) <= _rows(dm.rollouts.buffer[:])
    dm = _datamodule("halfcheetah", cheetah_path, real_ratio=1.0)
    dm.rollouts.rollout(_random_policy(dm.task.act_dim))
    assert _rows(dm.sampler()) <= _rows(dm.real)


def test_model_buffer_is_fifo_with_retain_epochs(cheetah_path):
    # one rollout per epoch (rollout_freq = updates_per_epoch = 10): capacity 2 rollouts
    # halfcheetah never terminates: 100 x 3 rows per rollout
    dm = _datamodule("halfcheetah", cheetah_path, updates_per_epoch=10)
    assert dm.rollouts.capacity == 600
    policy = _random_policy(dm.task.act_dim)
    dm.rollouts.rollout(policy)
    first = _rows(dm.rollouts.buffer[:])
    assert len(dm.rollouts) == 300
    dm.rollouts.rollout(policy)
    assert len(dm.rollouts) == 600 and first <= _rows(dm.rollouts.buffer[:])
    dm.rollouts.rollout(policy)  # capacity 2 rollouts: the first is evicted, the second kept
    assert len(dm.rollouts) == 600
    assert not (first & _rows(dm.rollouts.buffer[:]))


def test_terminated_rows_stop_and_terminal_transitions_are_stored():
    dm = _datamodule("hopper", collected_dataset("hopper", 2_000, seed=0), rollout_batch_size=400,
                     rollout_length=4)
    stats = dm.rollouts.rollout(_random_policy(dm.task.act_dim)).scalars
    data = dm.rollouts.buffer[:]
    terminated = data["next", "terminated"].squeeze(-1)
    # An untrained model drifts hopper states out of the healthy range: some rows end early.
    assert terminated.any()
    assert len(data) < 400 * 4
    assert stats["rollout/termination_rate"] > 0
    # A stored terminal row's next state is unhealthy, and no stored row starts from one.
    term_fn = dm.task.termination_fn
    assert torch.equal(term_fn(data["observation"], data["action"], data["next", "observation"]), terminated)
    assert not term_fn(data["observation"], data["action"], data["observation"]).any()


def test_rollout_schedule_in_training(cheetah_path):
    obs_dim, act_dim = get_task("halfcheetah").obs_dim, get_task("halfcheetah").act_dim
    module = SACModule(obs_dim, act_dim, hidden_dim=32)
    dm = _datamodule("halfcheetah", cheetah_path, learner=module, updates_per_epoch=25, rollout_freq=10)
    calls: list[int] = []
    rollouts = dm.rollouts
    original = rollouts.rollout

    def counting_rollout(policy, updates=0, device="cpu"):
        calls.append(int(module.sac_updates))
        return original(policy, updates, device)

    rollouts.rollout = counting_rollout
    trainer = L.Trainer(max_epochs=2, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False, accelerator="cpu", devices=1)
    trainer.fit(module, datamodule=dm)
    assert int(module.sac_updates) == 50
    # Rollouts before batches 0, 10, 20, 30, 40 (Lightning fetches one batch ahead, so the actor that
    # rolls out has made at most one update fewer than the batch index).
    assert len(calls) == 5
    for expected, got in zip([0, 10, 20, 30, 40], calls, strict=True):
        assert expected - 1 <= got <= expected


@pytest.mark.parametrize(("rollout_freq", "updates_per_epoch", "rollouts_per_epoch"),
                         [(10, 25, 3), (5, 25, 5), (1000, 1000, 1), (25, 10, 1)])
def test_model_buffer_keeps_retain_epochs_of_rollouts(cheetah_path, rollout_freq, updates_per_epoch,
                                                      rollouts_per_epoch):
    """Capacity = model_retain_epochs * ceil(updates_per_epoch / rollout_freq) * h * share (authors' pool)."""
    dm = _datamodule("halfcheetah", cheetah_path, rollout_freq=rollout_freq, updates_per_epoch=updates_per_epoch)
    rollouts = dm.rollouts
    assert rollouts_per_epoch == math.ceil(updates_per_epoch / rollout_freq)
    assert rollouts.capacity == 2 * rollouts_per_epoch * 3 * 100  # retain 2, h 3, 100 start states


def test_model_buffer_holds_retain_epochs_when_rolling_out_more_often(cheetah_path):
    """rollout_freq 10 < 25 updates per epoch: 3 rollouts an epoch, 2 epochs kept = 6 rollouts, FIFO."""
    dm = _datamodule("halfcheetah", cheetah_path, rollout_freq=10, updates_per_epoch=25)
    policy = _random_policy(dm.task.act_dim)
    dm.rollouts.rollout(policy)
    first = _rows(dm.rollouts.buffer[:])
    for _ in range(5):
        dm.rollouts.rollout(policy)
    assert len(dm.rollouts) == 1800 and first <= _rows(dm.rollouts.buffer[:])
    dm.rollouts.rollout(policy)  # the seventh rollout evicts the first
    assert len(dm.rollouts) == 1800 and not (first & _rows(dm.rollouts.buffer[:]))


def test_default_settings_keep_todays_capacity():
    """MOPO's schedule (rollout_freq 1000 = 1000 updates per epoch): 5 * h * 50,000 rows."""
    data = OfflineDataModule(task="halfcheetah", path=str(collected_dataset("halfcheetah", 1_000, seed=0)))
    ensemble = GaussianEnsemble(data.obs_dim, data.act_dim, num_members=3, num_elites=2, hidden_dim=32)
    dm = _mixed(data, ensemble, MOPOSettings(), _NoLearner())
    dm.setup()
    assert dm.rollouts.capacity == 5 * 5 * 50_000


def test_max_rows_keeps_the_last_rows(cheetah_path):
    full = load_dataset(cheetah_path, "halfcheetah")
    dm = _datamodule("halfcheetah", cheetah_path, max_rows=300)
    assert dm.real.shape == (300,)
    assert (dm.real == full[-300:]).all()
    kept = _rows(full[-300:])
    assert _rows(dm.real) == kept
    # the stage-1 holdout and bootstrap batches, and the rollout start states, come from the kept rows
    data = dm.offline.dynamics_data(num_members=3)
    assert data.holdout_inputs.shape[0] == 60 and data.train_inputs.shape[0] == 240
    assert {tuple(r) for r in data.holdout_inputs.tolist()} | {tuple(r) for r in data.train_inputs.tolist()} == kept
    assert torch.equal(dm.rollouts.start_states, full["observation"][-300:])
    # more rows than the file holds: everything is kept
    assert _datamodule("halfcheetah", cheetah_path, max_rows=10_000).real.shape == full.shape
    with pytest.raises(Exception, match="data.max_rows must be at least 1"):
        OfflineDataModule(task="halfcheetah", path=str(cheetah_path), max_rows=0)


@pytest.fixture
def fake_collect(monkeypatch, cheetah_path):
    """Replace the real-env collector by a copy of a cached file; record each call."""
    import mopo_lightning.collection.collect as collect_module

    calls = []

    def collect(task, steps, path, policy, seed, **kwargs):
        calls.append((steps, str(path), policy))
        path.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(cheetah_path, path)
        return path

    monkeypatch.setattr(collect_module, "collect", collect)
    return calls


def test_collects_only_into_collect_path(tmp_path, fake_collect, capsys):
    target = tmp_path / "data" / "quick.hdf5"
    spec = CollectIfMissing(path=str(target), steps=1000)
    collect_if_missing(str(target), spec, get_task("halfcheetah"), seed=0)
    assert fake_collect == [(1000, str(target), "random")]
    line = capsys.readouterr().out.strip()
    assert line.count("\n") == 0 and "collecting 1000" in line and str(target) in line, line
    dm = OfflineDataModule(task="halfcheetah", path=str(target))
    dm.setup("fit")
    assert dm.real.shape == (1000,)
    collect_if_missing(str(target), spec, get_task("halfcheetah"), seed=0)  # present now: not collected again
    assert len(fake_collect) == 1


@pytest.mark.parametrize("collect_path", ["data/quick.hdf5", None])
def test_missing_path_that_is_not_collect_path_is_an_error(tmp_path, fake_collect, collect_path, monkeypatch):
    """A mistyped --data.path with the quickstart config refuses instead of collecting into the typo."""
    monkeypatch.chdir(tmp_path)
    typo = tmp_path / "data" / "quikc.hdf5"
    spec = CollectIfMissing(path=collect_path, steps=1000)
    with pytest.raises(DatasetError, match="quikc.hdf5: no such file") as info:
        collect_if_missing(str(typo), spec, get_task("halfcheetah"), seed=0)
    assert "\n" not in str(info.value)
    assert fake_collect == [] and not typo.exists()
    with pytest.raises(DatasetError, match="quikc.hdf5"):  # the data side never collects
        OfflineDataModule(task="halfcheetah", path=str(typo)).setup("fit")
    # the relative collect.path names the same file as an absolute path to it
    if collect_path is not None:
        collect_if_missing(str(tmp_path / collect_path), spec, get_task("halfcheetah"), seed=0)
        assert fake_collect == [(1000, str(tmp_path / collect_path), "random")]
