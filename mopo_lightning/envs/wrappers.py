"""Reward functions, reward wrappers and the relabelling-info recorder of the out-of-distribution tasks.

Source: MOPO (Yu et al. 2020, arXiv 2005.13239), section 5.2 and appendix; reference section 8.
halfcheetah-jump and ant-angle keep the dynamics of HalfCheetah-v4 / Ant-v4 and change only the reward,
so a dataset collected on the standard task is relabelled row by row.

Every reward here is a pure function of a *transition record*: a mapping from the dataset's keys
(``actions``, ``infos/x_velocity``, ...) to arrays with a leading row dimension. One function scores
both sides: ``tasks.Task.relabel`` rewrites a stored file's rewards (``data.d4rl.load_dataset``) and
``RelabelReward`` scores the live env (evaluation, behaviour collection), so the reward the policy is
trained on and the one it is evaluated on cannot drift apart.

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

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import gymnasium as gym
import mujoco
import numpy as np

Record = Mapping[str, np.ndarray]
"""``actions`` [N, A] and ``infos/<name>`` [N] or [N, K] arrays of N transitions."""

INFO_KEYS = ("x_velocity", "y_velocity", "torso_height", "torso_height_at_reset")
CONTACT_KEY = "contact_forces"


# ---------------------------------------------------------------- rewards of a transition record


@dataclass(frozen=True)
class RewardFn:
    """A named reward of a transition record, with the record keys it reads."""

    name: str
    keys: tuple[str, ...]
    fn: Callable[[Record], np.ndarray]

    def __call__(self, record: Record) -> np.ndarray:
        """Rewards [N] (float64) of the N transitions in ``record``."""
        return np.asarray(self.fn(record), dtype=np.float64).reshape(-1)


def _ctrl(record: Record) -> np.ndarray:
    """||a||^2 per row."""
    return np.square(np.asarray(record["actions"], dtype=np.float64)).sum(axis=-1)


def _col(record: Record, name: str) -> np.ndarray:
    return np.asarray(record[f"infos/{name}"], dtype=np.float64).reshape(-1)


def _contact_cost(record: Record) -> np.ndarray:
    """||clip(contact, -1, 1)||^2 per row (the stored forces are already clipped, as in Ant-v4)."""
    forces = np.asarray(record[f"infos/{CONTACT_KEY}"], dtype=np.float64)
    return np.square(np.clip(forces.reshape(forces.shape[0], -1), -1.0, 1.0)).sum(axis=-1)


def halfcheetah_capped(record: Record) -> np.ndarray:
    """Behaviour reward of MOPO's halfcheetah data: min(v_x, 3) - 0.1 ||a||^2."""
    return np.minimum(_col(record, "x_velocity"), 3.0) - 0.1 * _ctrl(record)


def halfcheetah_jump(record: Record) -> np.ndarray:
    """halfcheetah-jump: min(v_x, 3) - 0.1 ||a||^2 + 15 (z_torso - z_torso_at_reset)."""
    lift = _col(record, "torso_height") - _col(record, "torso_height_at_reset")
    return halfcheetah_capped(record) + 15.0 * lift


def ant_forward(record: Record) -> np.ndarray:
    """Behaviour reward of MOPO's ant data: v_x - 0.5 ||a||^2 - 0.5e-3 ||clip(contact)||^2 + 1."""
    return _col(record, "x_velocity") - 0.5 * _ctrl(record) - 0.5e-3 * _contact_cost(record) + 1.0


ANGLE = math.radians(30.0)


def ant_angle(record: Record) -> np.ndarray:
    """ant-angle: v_xy . (cos 30deg, sin 30deg) - 0.5 ||a||^2 - 0.5e-3 ||clip(contact)||^2 + 1."""
    along = _col(record, "x_velocity") * math.cos(ANGLE) + _col(record, "y_velocity") * math.sin(ANGLE)
    return along - 0.5 * _ctrl(record) - 0.5e-3 * _contact_cost(record) + 1.0


_V, _Z = ("actions", "infos/x_velocity"), ("infos/torso_height", "infos/torso_height_at_reset")
_ANT = ("actions", "infos/x_velocity", "infos/y_velocity", f"infos/{CONTACT_KEY}")
REWARDS: dict[str, RewardFn] = {
    r.name: r
    for r in (
        RewardFn("halfcheetah-capped", _V, halfcheetah_capped),
        RewardFn("halfcheetah-jump", _V + _Z, halfcheetah_jump),
        RewardFn("ant-forward", _ANT, ant_forward),
        RewardFn("ant-angle", _ANT, ant_angle),
    )
}
"""Rewards by name: the two behaviour rewards (data collection) and the two test-task rewards."""


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


class InfoRecorder:
    """Row buffers of ``info["relabel"]`` for a collection of ``steps`` transitions.

    Buffers are allocated from the first record (the contact-force width depends on the robot).
    Velocities and heights are float64; contact forces float32 (84 per Ant row), as recorded.
    """

    def __init__(self, steps: int) -> None:
        self.steps = steps
        self.buffers: dict[str, np.ndarray] = {}

    def record(self, i: int, relabel: Mapping[str, Any]) -> None:
        if not self.buffers:
            for name, value in relabel.items():
                value = np.asarray(value)
                dtype = np.float32 if name == CONTACT_KEY else np.float64
                self.buffers[name] = np.zeros((self.steps, *value.shape), dtype)
        for name, value in relabel.items():
            self.buffers[name][i] = value

    def arrays(self, rows: int | None = None) -> dict[str, np.ndarray]:
        """``infos/<name>`` arrays of the first ``rows`` rows (all by default)."""
        return {f"infos/{name}": buf[:rows] for name, buf in self.buffers.items()}

    def load(self, arrays: Mapping[str, np.ndarray]) -> None:
        """Refill the first rows from ``arrays()`` output (resuming a collection)."""
        for key, value in arrays.items():
            name = key.removeprefix("infos/")
            value = np.asarray(value)
            if name not in self.buffers:
                self.buffers[name] = np.zeros((self.steps, *value.shape[1:]), value.dtype)
            self.buffers[name][: value.shape[0]] = value
