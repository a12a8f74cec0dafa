"""The collector: D4RL schema, determinism, episode flags, and replayable simulator states."""

from __future__ import annotations

import h5py
import numpy as np
import pytest

from mopo_lightning.collection.collect import collect
from mopo_lightning.data.summary import summarize
from mopo_lightning.envs.tasks import get_task
from mopo_lightning.envs.wrappers import make_env


def arrays(path) -> dict[str, np.ndarray]:
    out = {}
    with h5py.File(path, "r") as f:
        f.visititems(
            lambda name, obj: out.__setitem__(name, obj[()]) if isinstance(obj, h5py.Dataset) else None
        )
    return out


def test_schema(hopper_flags):
    data = arrays(hopper_flags)
    n, task = 1000, get_task("hopper")
    shapes = {
        "observations": ((n, task.obs_dim), np.float32),
        "next_observations": ((n, task.obs_dim), np.float32),
        "actions": ((n, task.act_dim), np.float32),
        "rewards": ((n,), np.float32),
        "terminals": ((n,), np.bool_),
        "timeouts": ((n,), np.bool_),
        "infos/qpos": ((n, 6), np.float64),
        "infos/qvel": ((n, 6), np.float64),
    }
    for key, (shape, dtype) in shapes.items():
        assert data[key].shape == shape and data[key].dtype == dtype, key
    meta = {k.split("/", 1)[1]: v for k, v in data.items() if k.startswith("metadata/")}
    assert (
        meta["task"] == b"hopper" and meta["env_id"] == b"Hopper-v4" and meta["behavior_policy"] == b"random"
    )
    assert meta["seed"] == 0 and meta["steps"] == n and meta["max_episode_steps"] == 25
    assert not (data["terminals"] & data["timeouts"]).any()
    assert np.abs(data["actions"]).max() <= 1.0


def test_episode_flags_follow_the_env(hopper_flags):
    """Timeouts end episodes of exactly 25 steps; inside episodes obs[i + 1] == next_obs[i]."""
    data = arrays(hopper_flags)
    ends = data["terminals"] | data["timeouts"]
    starts = np.concatenate([[0], np.flatnonzero(ends) + 1])
    lengths = np.diff(np.concatenate([starts, [1000]]))
    assert (lengths <= 25).all()
    timeout_rows = np.flatnonzero(data["timeouts"])
    episode_of = np.searchsorted(starts, timeout_rows, side="right") - 1
    np.testing.assert_array_equal(timeout_rows - starts[episode_of] + 1, 25)
    inner = np.flatnonzero(~ends[:-1])
    np.testing.assert_array_equal(data["observations"][inner + 1], data["next_observations"][inner])
    # After an end, the next row starts from a fresh reset, not from the final state.
    end_rows = np.flatnonzero(ends[:-1])
    assert (
        not np.isclose(data["observations"][end_rows + 1], data["next_observations"][end_rows]).all(1).any()
    )
    # The budget ended mid-episode here: like D4RL, the last row carries no flag.
    assert lengths[-1] < 25 and not ends[-1]
    summary = summarize(hopper_flags)
    assert summary["partial_last_episode"] and summary["episodes"] == ends.sum() + 1
    assert summary["terminals"] == data["terminals"].sum() and summary["timeouts"] == data["timeouts"].sum()


def test_same_seed_same_file(tmp_path):
    kwargs = {"steps": 300, "policy": "falling", "max_episode_steps": 40, "quiet": True}
    a = collect("walker2d", path=tmp_path / "a.hdf5", seed=3, **kwargs)
    b = collect("walker2d", path=tmp_path / "b.hdf5", seed=3, **kwargs)
    c = collect("walker2d", path=tmp_path / "c.hdf5", seed=4, **kwargs)
    assert a.read_bytes() == b.read_bytes()  # byte for byte
    da, dc = arrays(a), arrays(c)
    assert not np.array_equal(da["actions"], dc["actions"])
    assert not np.array_equal(da["infos/qpos"][0], dc["infos/qpos"][0])  # reset noise follows the seed
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.hdf5", "b.hdf5", "c.hdf5"]  # no temp files


def test_random_policy_is_seeded(tmp_path):
    a = arrays(collect("hopper", 200, tmp_path / "a.hdf5", seed=1, quiet=True))
    b = arrays(collect("hopper", 200, tmp_path / "b.hdf5", seed=1, quiet=True))
    for key in ("observations", "actions", "rewards", "next_observations", "infos/qpos"):
        np.testing.assert_array_equal(a[key], b[key])


def test_callable_policy(tmp_path):
    path = collect("halfcheetah", 50, tmp_path / "zero.hdf5", policy=lambda obs: np.zeros(6), quiet=True)
    data = arrays(path)
    assert (data["actions"] == 0).all() and data["metadata/behavior_policy"] == b"<lambda>"
    with pytest.raises(ValueError, match="unknown policy"):
        collect("hopper", 10, tmp_path / "x.hdf5", policy="expert", quiet=True)


@pytest.mark.parametrize("name", ["hopper", "walker2d", "halfcheetah", "ant"])
def test_state_replays_rows(name, dataset_factory):
    """set_state(qpos[i], qvel[i]) then step(actions[i]) gives next_observations[i] (and the reward)."""
    path = dataset_factory(name, 5_000, seed=0, policy="falling")
    data = arrays(path)
    env = make_env(name)
    env.reset(seed=123)  # a different start: every row's outcome must come from the stored state
    sim = env.unwrapped
    ends = np.flatnonzero(data["terminals"] | data["timeouts"])
    rows = np.unique(np.concatenate([np.arange(0, 5_000, 97), ends[:20], ends[:20] + 1, [4_999]]))
    rows = rows[rows < 5_000]
    for i in rows[::-1]:
        sim.set_state(data["infos/qpos"][i], data["infos/qvel"][i])
        np.testing.assert_allclose(sim._get_obs(), data["observations"][i], rtol=1e-6, atol=1e-6)
        next_obs, reward, terminated, _, _ = env.step(data["actions"][i])
        np.testing.assert_allclose(next_obs, data["next_observations"][i], rtol=1e-6, atol=1e-6)
        assert terminated == data["terminals"][i]
        if name != "ant":  # Ant-v4 reads the torso position before the step from stale kinematics
            np.testing.assert_allclose(reward, data["rewards"][i], rtol=1e-6, atol=1e-6)
    env.close()


def test_fall_on_the_time_limit_is_a_terminal(dataset_factory):
    """When the robot falls on the last allowed step, gymnasium raises both flags; we keep the fall only."""
    data = arrays(dataset_factory("hopper", 2_000, seed=0, policy="falling", max_episode_steps=12))
    ends = data["terminals"] | data["timeouts"]
    starts = np.concatenate([[0], np.flatnonzero(ends)[:-1] + 1])
    lengths = np.flatnonzero(ends) - starts + 1
    both = data["terminals"][np.flatnonzero(ends)] & (lengths == 12)
    assert both.sum() >= 3  # falls exactly at the limit do happen in this file
    assert not (data["terminals"] & data["timeouts"]).any()
    assert data["timeouts"].sum() >= 3
