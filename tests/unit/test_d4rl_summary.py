"""`data info`: episode split, return statistics, normalised scores, table and JSON output."""

from __future__ import annotations

import itertools
import json
import shutil

import h5py
import numpy as np
import pytest

from mopo_lightning.commands.data_info import main_info
from mopo_lightning.data.errors import DatasetError
from mopo_lightning.data.summary import episode_returns, summarize
from mopo_lightning.envs.tasks import get_task


def test_episode_returns_by_hand():
    rewards = np.array([1.0, 2.0, 3.0, 4.0, 5.0, 6.0])
    ends = np.array([False, True, False, False, True, False])
    returns, lengths, partial = episode_returns(rewards, ends)
    np.testing.assert_array_equal(returns, [3.0, 12.0, 6.0])
    np.testing.assert_array_equal(lengths, [2, 3, 1])
    assert partial
    returns, lengths, partial = episode_returns(rewards[:5], ends[:5])
    np.testing.assert_array_equal(returns, [3.0, 12.0])
    assert not partial


def test_summary_of_collected_file(hopper_flags):
    with h5py.File(hopper_flags, "r") as f:
        rewards, terminals, timeouts = f["rewards"][()], f["terminals"][()], f["timeouts"][()]
    s = summarize(hopper_flags)  # the task comes from metadata/task
    ends = np.flatnonzero(terminals | timeouts)
    first = rewards[: ends[0] + 1].sum(dtype=np.float64)
    last = rewards[ends[-1] + 1 :].sum(dtype=np.float64)  # the partial last episode counts
    returns = np.concatenate(
        [[first], [rewards[a + 1 : b + 1].sum(dtype=np.float64) for a, b in itertools.pairwise(ends)], [last]]
    )
    assert s["task"] == "hopper" and s["transitions"] == 1000
    assert s["episodes"] == len(ends) + 1 and s["partial_last_episode"] is True
    assert s["terminals"] == terminals.sum() and s["timeouts"] == timeouts.sum()
    assert s["return"]["mean"] == pytest.approx(returns.mean()) and s["return"]["max"] == pytest.approx(
        returns.max()
    )
    assert s["return"]["min"] == pytest.approx(returns.min()) and s["return"]["std"] == pytest.approx(
        returns.std()
    )
    hopper = get_task("hopper")
    assert s["normalized_score"]["mean"] == pytest.approx(
        100 * (returns.mean() + 20.272305) / (3234.3 + 20.272305)
    )
    assert s["normalized_score"]["max"] == pytest.approx(hopper.normalized_score(returns.max()))
    assert s["metadata"]["behavior_policy"] == "random" and s["metadata"]["max_episode_steps"] == 25


def test_summary_without_timeouts_uses_step_rule(halfcheetah_2100, tmp_path):
    path = tmp_path / "halfcheetah_random-v0.hdf5"
    shutil.copy(halfcheetah_2100, path)
    with h5py.File(path, "a") as f:
        del f["timeouts"], f["metadata"]
    s = summarize(path)  # the task comes from the file name
    assert s["task"] == "halfcheetah" and not s["timeouts_key"]
    assert s["episodes"] == 3 and s["partial_last_episode"] and s["timeouts"] == 2
    assert s["episode_length"]["max"] == 1000 and s["episode_length"]["min"] == 100


def test_summary_needs_a_task(hopper_flags, tmp_path):
    path = tmp_path / "anonymous.hdf5"
    shutil.copy(hopper_flags, path)
    with h5py.File(path, "a") as f:
        del f["metadata/task"]
    with pytest.raises(DatasetError, match="pass --task"):
        summarize(path)
    assert summarize(path, "hopper")["task"] == "hopper"


def test_main_info_json_and_table(hopper_flags, capsys):
    main_info(str(hopper_flags), json=True)
    out = json.loads(capsys.readouterr().out)
    assert out == json.loads(json.dumps(summarize(hopper_flags)))
    main_info(str(hopper_flags), task="hopper")
    table = capsys.readouterr().out
    for field in ("transitions", "episodes", "partial_last_episode", "normalized_score", "metadata/task"):
        assert field in table
