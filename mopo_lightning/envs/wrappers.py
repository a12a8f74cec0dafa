"""The real MuJoCo envs and their gymnasium wrappers: the recorded OOD quantities and relabelled rewards.

``make_env`` builds a task's real env (evaluation, collection, video); ``RelabelInfos`` records what the
out-of-distribution rewards of ``envs/rewards.py`` need, and ``RelabelReward`` scores a variant's reward live.

Recorded quantities (``RelabelInfos``), after each step:
- ``x_velocity``, ``y_velocity``: the env's own ``info`` values (HalfCheetah: root x joint; Ant: torso
  centre of mass, as Ant-v4 computes them); planar robots have ``y_velocity`` 0.
- ``torso_height``: the torso's world z, ``body_pos[torso].z + qpos[z] - qpos0[z]`` of the root z joint
  (``rootz`` slide joint, or the free joint's z), i.e. qpos[1] for Hopper/Walker2d, 0.7 + qpos[1] for
  HalfCheetah, qpos[2] for Ant; ``torso_height_at_reset``: its value right after the episode's reset.
- ``contact_forces`` (Ant only): Ant-v4's ``contact_forces`` property, ``clip(data.cfrc_ext, -1, 1)``,
  flattened, even with ``use_contact_forces=False`` (they are then absent from the observation).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Mapping
from typing import Any

import gymnasium as gym
import mujoco
import numpy as np

from mopo_lightning.envs.rewards import CONTACT_KEY, REWARDS, RewardFn
from mopo_lightning.envs.tasks import Task, get_task


def make_env(task: str | Task, **kwargs: Any) -> gym.Env:
    """The task's real gymnasium env (with its 1000-step time limit), scoring a variant's own reward."""
    task = get_task(task)
    with warnings.catch_warnings():
        # v4 is chosen on purpose: its observations match D4RL's (v5 changes some dynamics).
        warnings.filterwarnings("ignore", message=".*is out of date.*")
        env = gym.make(task.env_id, **{**task.env_kwargs, **kwargs})
    if task.relabel is not None:
        env = RelabelReward(env, task.relabel)
    return env


# ---------------------------------------------------------------- what the simulator tells us


def _torso_z_reader(sim: Any) -> Callable[[], float]:
    """A function giving the torso's world z from ``qpos`` (see the module docstring)."""
    model = sim.model
    torso = mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_BODY, "torso")
    rootz = mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_JOINT, "rootz")
    if torso < 0:
        raise ValueError(f"{type(sim).__name__}: no body named 'torso'")
    if rootz >= 0:
        adr = int(model.jnt_qposadr[rootz])
    elif model.jnt_type[0] == mujoco.mjtJoint.mjJNT_FREE:
        adr = int(model.jnt_qposadr[0]) + 2
    else:
        raise ValueError(f"{type(sim).__name__}: no 'rootz' or free root joint")
    offset = float(model.body_pos[torso, 2] - model.qpos0[adr])
    return lambda: offset + float(sim.data.qpos[adr])


class RelabelInfos(gym.Wrapper):
    """Adds ``info["relabel"]``, the quantities the OOD rewards need, to every step's info."""

    def __init__(self, env: gym.Env) -> None:
        super().__init__(env)
        self._torso_z = _torso_z_reader(env.unwrapped)
        self._has_contacts = hasattr(env.unwrapped, "_contact_force_range")  # Ant-v4
        self._z_reset = float("nan")

    def reset(self, **kwargs: Any):
        obs, info = self.env.reset(**kwargs)
        self._z_reset = self._torso_z()
        return obs, info

    def step(self, action):
        obs, reward, terminated, truncated, info = self.env.step(action)
        record = {
            "x_velocity": float(info["x_velocity"]),
            "y_velocity": float(info.get("y_velocity", 0.0)),
            "torso_height": self._torso_z(),
            "torso_height_at_reset": self._z_reset,
        }
        if self._has_contacts:
            forces = self.env.unwrapped.contact_forces  # Ant-v4: clip(cfrc_ext, *contact_force_range)
            record[CONTACT_KEY] = np.asarray(forces, dtype=np.float32).reshape(-1)
        info["relabel"] = record
        return obs, reward, terminated, truncated, info


def ensure_relabel_infos(env: gym.Env) -> gym.Env:
    """``env`` itself if a ``RelabelInfos`` is already in its wrapper chain, else ``env`` wrapped."""
    inner = env
    while isinstance(inner, gym.Wrapper):
        if isinstance(inner, RelabelInfos):
            return env
        inner = inner.env
    return RelabelInfos(env)


def step_record(action: np.ndarray, relabel: Mapping[str, Any]) -> dict[str, np.ndarray]:
    """The one-row transition record of a step: its action and ``info["relabel"]``."""
    record = {"actions": np.asarray(action).reshape(1, -1)}
    for name, value in relabel.items():
        record[f"infos/{name}"] = np.asarray(value).reshape(1, *np.shape(value))
    return record


class RelabelReward(gym.Wrapper):
    """Scores each step with a ``RewardFn`` (the env's own reward goes to ``info["env_reward"]``)."""

    def __init__(self, env: gym.Env, reward: RewardFn | str) -> None:
        super().__init__(ensure_relabel_infos(env))
        self.reward_fn = REWARDS[reward] if isinstance(reward, str) else reward

    def step(self, action):
        obs, reward, terminated, truncated, info = self.env.step(action)
        info["env_reward"] = reward
        new_reward = float(self.reward_fn(step_record(action, info["relabel"]))[0])
        return obs, new_reward, terminated, truncated, info
