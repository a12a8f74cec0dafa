"""The one rule that decides a dataset name's source by its form (``data.source.dataset_source``)."""

from __future__ import annotations

import pytest

from mopo_lightning.data.source import dataset_source
from mopo_lightning.envs.tasks import get_task


@pytest.mark.parametrize(
    ("name", "source"),
    [
        ("mujoco/hopper/medium-v0", "minari"),
        ("mujoco/halfcheetah/simple-v0", "minari"),
        ("local/hopper/test-v0", "minari"),
        ("D4RL/door/human-v2", "minari"),
        ("hopper-medium-v2", "d4rl"),
        ("walker2d-medium-replay-v2", "d4rl"),
        ("data/quickstart/hopper-random-20k.hdf5", "file"),
        ("mujoco/hopper/medium-v0.hdf5", "file"),
        ("/abs/mujoco/hopper/medium-v0", "file"),
        ("./mujoco/hopper/medium-v0", "file"),
        ("~/data/hopper.h5", "file"),
        ("some/dir/without_version", "file"),
    ],
)
def test_source_by_form(name, source):
    assert dataset_source(name) == source


def test_existing_file_is_a_file(tmp_path):
    path = tmp_path / "mujoco" / "hopper" / "medium-v0"
    path.parent.mkdir(parents=True)
    path.write_bytes(b"")
    assert dataset_source(str(path)) == "file"


@pytest.mark.parametrize(("name", "env_id", "obs_dim", "act_dim"), [
    ("hopper-v5", "Hopper-v5", 11, 3), ("walker2d-v5", "Walker2d-v5", 17, 6),
    ("halfcheetah-v5", "HalfCheetah-v5", 17, 6), ("ant-v5", "Ant-v5", 105, 8),
])
def test_v5_tasks(name, env_id, obs_dim, act_dim):
    task = get_task(name)
    assert (task.env_id, task.obs_dim, task.act_dim) == (env_id, obs_dim, act_dim)
    assert not task.has_reference_scores  # a Minari dataset brings its own
    assert get_task(name.split("-")[0]).env_id.endswith("-v4")  # D4RL names keep the v4 envs
