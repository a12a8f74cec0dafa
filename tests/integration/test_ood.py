"""MOPO's out-of-distribution tasks on real MuJoCo data: registry, relabelling, evaluation wrapper.

The relabelled dataset rewards (``load_dataset`` with a variant task) must equal what the variant's own
evaluation env scores on the same transitions, and both must equal the rewards written out from the
simulator state (qpos) or from Ant-v4's contact-force variant, computed here independently.
"""

from __future__ import annotations

import math

import h5py
import numpy as np
import pytest
import torch
from conftest import read_hdf5

from mopo_lightning.callbacks.evaluation import evaluate_policy
from mopo_lightning.collection.collect import collect
from mopo_lightning.data.d4rl import load_dataset
from mopo_lightning.data.errors import DatasetError
from mopo_lightning.envs.rewards import REWARDS
from mopo_lightning.envs.tasks import get_task
from mopo_lightning.envs.wrappers import RelabelReward, make_env

LIMIT = 100  # short time limit: every file holds several resets




@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, object]:
    """Random-policy files of the two base tasks, collected with the project's collector."""
    root = tmp_path_factory.mktemp("ood")
    return {
        task: collect(task, steps=600, path=root / f"{task}.hdf5", policy="random", seed=3,
                      max_episode_steps=LIMIT, quiet=True)
        for task in ("halfcheetah", "ant")
    }


def test_registry_variants_win_and_d4rl_names_still_map():
    assert get_task("halfcheetah-jump").name == "halfcheetah-jump"
    assert get_task("halfcheetah_jump").name == "halfcheetah-jump"
    assert get_task("ant-angle").name == "ant-angle"
    assert get_task("halfcheetah-medium-v2").name == "halfcheetah"
    assert get_task("walker2d-medium-replay-v2").name == "walker2d"
    assert get_task("ant").relabel is None and get_task("ant-angle").termination_fn is get_task("ant").termination_fn
    jump = get_task("halfcheetah-jump")
    assert (jump.obs_dim, jump.act_dim, jump.env_id) == (17, 6, "HalfCheetah-v4")
    assert math.isnan(jump.normalized_score(100.0)) and not jump.has_reference_scores
    assert get_task("halfcheetah").has_reference_scores
    assert isinstance(make_env(jump), RelabelReward)
    assert make_env("ant-angle").observation_space.shape == (27,)


def replay_rewards(path, variant: str) -> tuple[np.ndarray, np.ndarray]:
    """Replay the file's actions in the variant's own env (same seed, same resets): rewards, next obs."""
    data = read_hdf5(path)
    env = make_env(variant, max_episode_steps=LIMIT)
    env.reset(seed=int(data["metadata/seed"]))
    ends = data["terminals"] | data["timeouts"]
    rewards, next_obs = [], []
    for i, action in enumerate(data["actions"]):
        obs, reward, terminated, truncated, _ = env.step(action)
        rewards.append(reward)
        next_obs.append(obs)
        assert bool(terminated or truncated) == bool(ends[i]), i
        if ends[i]:
            env.reset()
    return np.array(rewards), np.array(next_obs, dtype=np.float32)


@pytest.mark.parametrize("base, variant", [("halfcheetah", "halfcheetah-jump"), ("ant", "ant-angle")])
def test_relabelled_rewards_equal_the_evaluation_wrapper(files, base, variant):
    path = files[base]
    relabelled = load_dataset(path, variant)["next", "reward"].squeeze(-1).numpy()
    env_rewards, next_obs = replay_rewards(path, variant)
    np.testing.assert_array_equal(next_obs, read_hdf5(path)["next_observations"])  # the very same transitions
    np.testing.assert_allclose(relabelled, env_rewards, rtol=0, atol=1e-5)
    # the base task keeps the file's rewards, which differ from the variant's
    base_rewards = load_dataset(path, base)["next", "reward"].squeeze(-1).numpy()
    np.testing.assert_array_equal(base_rewards, read_hdf5(path)["rewards"])
    assert np.abs(base_rewards - relabelled).max() > 0.05
    # qlearning mode keeps a subset of the rows, with the same relabelled rewards
    q = load_dataset(path, variant, mode="qlearning")["next", "reward"].squeeze(-1).numpy()
    assert np.isin(q, relabelled).all()


def test_halfcheetah_rewards_from_the_simulator_state(files):
    """jump / capped rewards written out from qpos: v_x by finite difference, z = 0.7 + rootz."""
    data, dt = read_hdf5(files["halfcheetah"]), 0.05
    qpos, act = data["infos/qpos"], data["actions"].astype(np.float64)
    ends = data["terminals"] | data["timeouts"]
    starts = np.concatenate([[0], np.flatnonzero(ends)[:-1] + 1])
    episode_start = starts[np.searchsorted(starts, np.arange(len(act)), side="right") - 1]
    inner = np.flatnonzero(~ends[:-1])  # rows whose next state is the next row's qpos
    vx = (qpos[inner + 1, 0] - qpos[inner, 0]) / dt
    ctrl = 0.1 * np.square(act[inner]).sum(1)
    lift = qpos[inner + 1, 1] - qpos[episode_start[inner], 1]
    jump = load_dataset(files["halfcheetah"], "halfcheetah-jump")["next", "reward"].squeeze(-1).numpy()
    np.testing.assert_allclose(jump[inner], np.minimum(vx, 3.0) - ctrl + 15.0 * lift, atol=1e-5)
    np.testing.assert_allclose(data["infos/torso_height"][inner], 0.7 + qpos[inner + 1, 1], atol=1e-12)
    np.testing.assert_allclose(data["rewards"][inner], vx - ctrl, atol=1e-5)  # the env's own reward
    capped = REWARDS["halfcheetah-capped"](data)
    np.testing.assert_allclose(capped[inner], np.minimum(vx, 3.0) - ctrl, atol=1e-5)
    assert (vx > 3.0).sum() == 0 or not np.allclose(capped[inner], data["rewards"][inner])
    assert np.abs(lift).max() > 0.05  # the jump term is exercised


def test_ant_rewards_match_ant_v4_with_contact_costs(files):
    """Ant-v4 with use_contact_forces=True (same physics) charges the contact cost in its own reward."""
    import gymnasium as gym

    data = read_hdf5(files["ant"])
    env = gym.make("Ant-v4", use_contact_forces=True, max_episode_steps=LIMIT)
    env.reset(seed=3)
    ends = data["terminals"] | data["timeouts"]
    full, vx, vy = [], [], []
    for i, action in enumerate(data["actions"]):
        _, reward, _, _, info = env.step(action)
        full.append(reward), vx.append(info["x_velocity"]), vy.append(info["y_velocity"])
        if ends[i]:
            env.reset()
    full, vx, vy = map(np.array, (full, vx, vy))
    np.testing.assert_allclose(REWARDS["ant-forward"](data), full, atol=1e-5)
    c, s = math.cos(math.pi / 6), math.sin(math.pi / 6)
    angle = load_dataset(files["ant"], "ant-angle")["next", "reward"].squeeze(-1).numpy()
    np.testing.assert_allclose(angle, full - vx + c * vx + s * vy, atol=1e-5)
    forces = data["infos/contact_forces"]
    assert forces.shape == (600, 84) and np.abs(forces).max() <= 1.0 and (forces != 0).any()
    contact_cost = 0.5e-3 * np.square(forces.astype(np.float64)).sum(1)
    assert contact_cost.max() > 1e-4
    np.testing.assert_allclose(data["rewards"] - contact_cost, full, atol=1e-5)  # file: the env's own reward


def test_variant_needs_the_infos(tmp_path, files):
    """A D4RL file without the relabelling infos is refused with the missing key named."""
    path = tmp_path / "plain.hdf5"
    src = read_hdf5(files["halfcheetah"])
    with h5py.File(path, "w") as f:
        for key in ("observations", "actions", "rewards", "terminals", "timeouts", "next_observations"):
            f.create_dataset(key, data=src[key])
    assert load_dataset(path, "halfcheetah").shape == (600,)
    with pytest.raises(DatasetError, match="infos/torso_height"):
        load_dataset(path, "halfcheetah-jump")


def test_evaluation_scores_the_variant_reward():
    """Evaluation episodes in a variant sum the variant's reward (zero actions: no control cost)."""
    def act(obs):
        return torch.zeros(obs.shape[0], 6)

    jump = evaluate_policy("halfcheetah-jump", act, [0, 1], seed=5, max_episode_steps=30)
    plain = evaluate_policy("halfcheetah", act, [0, 1], seed=5, max_episode_steps=30)
    env = make_env("halfcheetah-jump", max_episode_steps=30)
    env.reset(seed=5)
    expected = 0.0
    for _ in range(30):
        *_, info = env.step(np.zeros(6, np.float32))
        r = info["relabel"]
        expected += min(r["x_velocity"], 3.0) + 15.0 * (r["torso_height"] - r["torso_height_at_reset"])
    assert jump.returns[0] == pytest.approx(expected, abs=1e-9)
    assert not np.allclose(jump.returns, plain.returns)
