"""Reward functions of transition records: the behaviour and test rewards of MOPO's OOD tasks.

Source: MOPO (Yu et al. 2020, arXiv 2005.13239), section 5.2 and appendix; reference section 8.
halfcheetah-jump and ant-angle keep the dynamics of HalfCheetah-v4 / Ant-v4 and change only the reward,
so a dataset collected on the standard task is relabelled row by row.

Every reward here is a pure function of a *transition record*: a mapping from the dataset's keys
(``actions``, ``infos/x_velocity``, ...) to arrays with a leading row dimension. One function scores
both sides: ``envs.tasks.Task.relabel`` rewrites a stored file's rewards (``data.d4rl.load_dataset``) and
``envs.wrappers.RelabelReward`` scores the live env (evaluation, behaviour collection), so the reward the
policy is trained on and the one it is evaluated on cannot drift apart. The quantities recorded per step
are described in ``envs/wrappers.py`` (``RelabelInfos``).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass

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
