"""Minari datasets, written by ``minari`` itself from real MuJoCo v5 rollouts, loaded as transitions.

Every dataset here is real: the project's collector steps the gymnasium v5 env and hands the episodes to
``minari.create_dataset_from_buffers``; the tests' store is ``tests/.data/minari`` (``conftest.minari_dataset``).
"""

from __future__ import annotations

import math
import os
import subprocess
import sys

import minari
import numpy as np
import pytest
import torch

from mopo_lightning.data.errors import DatasetError
from mopo_lightning.data.minari import load_minari, open_dataset
from mopo_lightning.data.summary import summarize
from mopo_lightning.envs.tasks import get_task
from mopo_lightning.envs.wrappers import make_env
from mopo_lightning.training.datamodule import OfflineDataModule


def episodes(dataset_id: str) -> list:
    return list(minari.load_dataset(dataset_id).iterate_episodes())


def test_load_keeps_episodes_next_observations_and_both_flags(minari_factory):
    dataset_id = minari_factory("hopper-v5", 400, max_episode_steps=25)
    eps = episodes(dataset_id)
    td = load_minari(dataset_id, "hopper-v5")
    assert td.shape[0] == sum(len(e.rewards) for e in eps) == minari.load_dataset(dataset_id).total_steps == 400
    obs = np.concatenate([e.observations[:-1] for e in eps])
    nxt = np.concatenate([e.observations[1:] for e in eps])
    term = np.concatenate([e.terminations for e in eps])
    trunc = np.concatenate([e.truncations for e in eps])
    np.testing.assert_array_equal(td["observation"].numpy(), obs.astype(np.float32))
    np.testing.assert_array_equal(td["next", "observation"].numpy(), nxt.astype(np.float32))
    np.testing.assert_array_equal(td["action"].numpy(), np.concatenate([e.actions for e in eps]).astype(np.float32))
    np.testing.assert_array_equal(td["next", "reward"].numpy()[:, 0],
                                  np.concatenate([e.rewards for e in eps]).astype(np.float32))
    np.testing.assert_array_equal(td["next", "terminated"].numpy()[:, 0], term)
    np.testing.assert_array_equal(td["next", "truncated"].numpy()[:, 0], trunc)
    assert term.sum() > 0 and trunc.sum() > 0 and not (term & trunc).any()
    # next observation of a row is the following row's observation except where an episode ends
    ends = np.cumsum([len(e.rewards) for e in eps]) - 1
    inner = np.setdiff1d(np.arange(399), ends)
    np.testing.assert_array_equal(td["next", "observation"][inner], td["observation"][inner + 1])

    dm = OfflineDataModule(task="hopper-v5", dataset=dataset_id)
    dm.setup()
    assert dm.data.source == "minari" and (dm.real == td).all()


def test_task_spec_is_the_datasets_recorded_env(minari_factory):
    """Ant-v5 without contact forces (27 columns, not the default 105): the recorded spec wins."""
    dataset_id = minari_factory("ant-v5", 200, env_kwargs={"include_cfrc_ext_in_observation": False})
    dm = OfflineDataModule(task="ant-v5", dataset=dataset_id)
    spec = dm.task_spec
    recorded = minari.load_dataset(dataset_id).spec.env_spec
    assert (spec.env_id, spec.env_kwargs, spec.obs_dim, spec.act_dim) == ("Ant-v5", recorded.kwargs, 27, 8)
    assert recorded.kwargs == {"include_cfrc_ext_in_observation": False}
    env = make_env(spec)
    assert env.spec.id == "Ant-v5" and env.observation_space.shape == (27,)
    assert env.spec.kwargs == minari.load_dataset(dataset_id).recover_environment().spec.kwargs
    dm.setup()
    assert dm.real["observation"].shape == (200, 27)


def test_recorded_health_range_drives_termination(minari_factory):
    """A dataset collected with healthy_angle_range (-0.5, 0.5): its task terminates where that env did."""
    dataset_id = minari_factory("hopper-v5", 3000, policy="falling", env_kwargs={"healthy_angle_range": (-0.5, 0.5)})
    dm = OfflineDataModule(task="hopper", dataset=dataset_id)  # a v4 task name: the data's Hopper-v5 wins
    assert dm.task_spec.env_id == "Hopper-v5" and dm.task_spec.name == "hopper-v5"
    dm.setup()
    real = dm.real
    args = (real["observation"], real["action"], real["next", "observation"])
    terminated = real["next", "terminated"][:, 0]
    assert terminated.sum() >= 100 and torch.equal(dm.task_spec.termination_fn(*args), terminated)
    # the default range (-0.2, 0.2) would end episodes that this env let go on
    assert (get_task("hopper-v5").termination_fn(*args) & ~terminated).sum() >= 10


def test_normalized_scores_use_the_datasets_references(minari_factory, capsys):
    dataset_id = minari_factory("hopper-v5", 300, max_episode_steps=50, ref_min_score=-20.0, ref_max_score=3000.0)
    dataset = minari.load_dataset(dataset_id)
    dm = OfflineDataModule(task="hopper-v5", dataset=dataset_id)
    returns = np.array([np.sum(e.rewards, dtype=np.float64) for e in dataset.iterate_episodes()])
    ours = dm.task_spec.normalized_score(returns)
    np.testing.assert_allclose(ours, 100.0 * minari.get_normalized_score(dataset, returns), rtol=1e-12)
    assert dm.score_reference == f"minari:{dataset_id}" and dm.task_spec.has_reference_scores
    info = summarize(dataset_id)
    assert info["transitions"] == 300 and info["episodes"] == len(returns)
    assert info["return"]["mean"] == pytest.approx(returns.mean())
    expected = 100.0 * minari.get_normalized_score(dataset, returns.mean())
    assert info["normalized_score"]["mean"] == pytest.approx(expected)
    assert info["score_reference"] == f"minari:{dataset_id}"
    # the path fit hands to `data info` (dataset_path) summarises the same dataset
    assert summarize(dm.data.file(), dm.task_spec)["normalized_score"] == info["normalized_score"]
    dm.setup()
    assert "no reference scores" not in capsys.readouterr().out


def test_without_references_scores_are_null_and_said_once(minari_factory, capsys):
    dataset_id = minari_factory("hopper-v5", 200)
    dm = OfflineDataModule(task="hopper-v5", dataset=dataset_id)
    assert not dm.task_spec.has_reference_scores and dm.score_reference == "none"
    assert math.isnan(dm.task_spec.normalized_score(100.0))
    dm.setup()
    dm.setup()
    out = capsys.readouterr().out
    assert out.count("no reference scores") == 1 and dataset_id in out
    assert summarize(dataset_id)["normalized_score"] == {"mean": None, "max": None}


def test_d4rl_runs_keep_d4rl_references(hopper_small):
    dm = OfflineDataModule(task="hopper", path=str(hopper_small))
    assert dm.data.source == "file" and dm.score_reference == "D4RL" and dm.task_spec.env_id == "Hopper-v4"


def test_wrong_robot_is_one_line(minari_factory):
    dataset_id = minari_factory("hopper-v5", 200)
    with pytest.raises(DatasetError) as err:
        _ = OfflineDataModule(task="walker2d-v5", dataset=dataset_id).task_spec
    assert "\n" not in str(err.value) and "Hopper-v5" in str(err.value) and "walker2d-v5" in str(err.value)


def test_offline_remote_id_is_one_line(tmp_path):
    """A remote id missing from an empty store, with Minari's remote unreachable (HF offline mode)."""
    code = (
        "from mopo_lightning.training.datamodule import OfflineDataModule\n"
        "from mopo_lightning.data.summary import summarize\n"
        "from mopo_lightning.data.errors import DatasetDownloadError\n"
        "for call in (lambda: OfflineDataModule(task='hopper-v5', dataset='mujoco/hopper/medium-v0').task_spec,\n"
        "             lambda: summarize('mujoco/hopper/medium-v0')):\n"
        "    try:\n"
        "        call()\n"
        "    except DatasetDownloadError as err:\n"
        "        print('ERROR', repr(str(err)))\n"
    )
    env = {**os.environ, "MINARI_DATASETS_PATH": str(tmp_path / "store"), "HF_HUB_OFFLINE": "1"}
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300,
                          check=False)
    lines = [line for line in proc.stdout.splitlines() if line.startswith("ERROR")]
    assert len(lines) == 2, proc.stdout + proc.stderr
    for line in lines:
        message = eval(line[len("ERROR "):])  # the repr printed above: one string
        assert "\n" not in message
        assert "mujoco/hopper/medium-v0" in message and str(tmp_path / "store") in message
        assert "minari download mujoco/hopper/medium-v0" in message


def test_open_dataset_reads_a_dataset_directory(minari_factory):
    from mopo_lightning.data.minari import store_dir
    from mopo_lightning.data.source import dataset_source

    dataset_id = minari_factory("hopper-v5", 200)
    directory = store_dir() / dataset_id
    assert dataset_source(str(directory)) == "minari" and dataset_source(dataset_id) == "minari"
    assert open_dataset(directory).spec.dataset_id == dataset_id
    assert summarize(str(directory))["transitions"] == 200
