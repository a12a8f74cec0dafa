"""Task registry: what MOPO needs to know about each MuJoCo task.

A pure registry: env ids, sizes, D4RL reference scores (MOPO reference section 6) and references to the
functions defined below it (``envs/termination.py``, ``envs/rewards.py``). The gymnasium ``*-v4``
environments are used because their observation layouts match D4RL's; ``envs.wrappers.make_env`` builds them.

The ``*-v5`` tasks (``hopper-v5``, ``walker2d-v5``, ``halfcheetah-v5``, ``ant-v5``) are the envs Minari's
``mujoco/*`` datasets were collected on, at gymnasium's defaults: observation sizes 11, 17, 17 and 105 (Ant-v5
includes the 78 contact-force columns by default). They carry no reference scores: D4RL's were measured on
other env versions, and a Minari dataset brings its own (``task_from_env_spec``).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from torch import Tensor

from mopo_lightning.envs import termination
from mopo_lightning.envs.rewards import REWARDS, RewardFn
from mopo_lightning.envs.termination import TerminationFn
from mopo_lightning.guards import UnknownName, did_you_mean


@dataclass(frozen=True)
class Task:
    """One MuJoCo task: env id, sizes, termination and D4RL score normalisation.

    A variant (MOPO's out-of-distribution tasks, reference section 8) has a ``relabel`` reward: the
    dataset's rewards are recomputed from each row's infos, and ``envs.wrappers.make_env`` scores the same reward.
    """

    name: str
    env_id: str
    obs_dim: int
    act_dim: int
    termination_fn: TerminationFn
    ref_min_score: float
    ref_max_score: float
    env_kwargs: dict[str, Any] = field(default_factory=dict)
    relabel: RewardFn | None = None
    """Reward recomputed from a stored transition's ``actions`` and ``infos/*`` (None: keep the file's)."""

    @property
    def has_reference_scores(self) -> bool:
        """False for variants: D4RL has no reference returns for them."""
        return math.isfinite(self.ref_min_score) and math.isfinite(self.ref_max_score)

    def normalized_score(self, returns: float | np.ndarray | Tensor) -> float | np.ndarray | Tensor:
        """D4RL normalised score: 100 * (return - min) / (max - min); NaN for variants (no reference)."""
        return 100.0 * (returns - self.ref_min_score) / (self.ref_max_score - self.ref_min_score)


TASKS: dict[str, Task] = {
    "hopper": Task("hopper", "Hopper-v4", 11, 3, termination.hopper, -20.272305, 3234.3),
    "walker2d": Task("walker2d", "Walker2d-v4", 17, 6, termination.walker2d, 1.629008, 4592.3),
    "halfcheetah": Task("halfcheetah", "HalfCheetah-v4", 17, 6, termination.never, -280.178953, 12135.0),
    # MOPO's ant uses the 27-dim observation (qpos[2:] + qvel, no contact forces), which is
    # Ant-v4's default; D4RL's 111-dim ant files carry contact forces and do not fit this task.
    "ant": Task(
        "ant", "Ant-v4", 27, 8, termination.ant, -325.6, 3879.7, env_kwargs={"use_contact_forces": False}
    ),
    # MOPO's out-of-distribution tasks (reference section 8): same dynamics, relabelled reward, no
    # D4RL reference scores (normalized_score gives NaN).
    "halfcheetah-jump": Task(
        "halfcheetah-jump", "HalfCheetah-v4", 17, 6, termination.never, math.nan, math.nan,
        relabel=REWARDS["halfcheetah-jump"],
    ),
    "ant-angle": Task(
        "ant-angle", "Ant-v4", 27, 8, termination.ant, math.nan, math.nan,
        env_kwargs={"use_contact_forces": False}, relabel=REWARDS["ant-angle"],
    ),
    # Gymnasium v5 (Minari's mujoco/* data), gymnasium's defaults; health rules as v4's (envs/termination.py).
    "hopper-v5": Task("hopper-v5", "Hopper-v5", 11, 3, termination.hopper, math.nan, math.nan),
    "walker2d-v5": Task("walker2d-v5", "Walker2d-v5", 17, 6, termination.walker2d, math.nan, math.nan),
    "halfcheetah-v5": Task("halfcheetah-v5", "HalfCheetah-v5", 17, 6, termination.never, math.nan, math.nan),
    "ant-v5": Task("ant-v5", "Ant-v5", 105, 8, termination.ant, math.nan, math.nan),
}

ROBOTS = {"Hopper": "hopper", "Walker2d": "walker2d", "HalfCheetah": "halfcheetah", "Ant": "ant"}
"""Gymnasium env-id prefix -> robot name (the termination function's)."""


def get_task(name: str | Task) -> Task:
    """Look a task up by name, or by a D4RL dataset name such as ``walker2d-medium-replay-v2``.

    The longest registered name that the (``_`` -> ``-``) name equals or starts with, then ``-``, wins:
    ``halfcheetah-jump`` is the variant, ``halfcheetah-medium-v2`` is ``halfcheetah``. An unknown name is one
    ``guards.UnknownName`` line (exit 2; still a ``KeyError``) with the closest task, of the whole name or of its
    first word (``hoper-medium-v2``: hopper).
    """
    if isinstance(name, Task):
        return name
    key = name.strip().lower().replace("_", "-")
    for known in sorted(TASKS, key=len, reverse=True):
        if key == known or key.startswith(known + "-"):
            return TASKS[known]
    hint = did_you_mean(key, TASKS) or did_you_mean(key.split("-")[0], TASKS)
    raise UnknownName(f"unknown task {name!r}{hint}; known: {', '.join(sorted(TASKS))}")


def task_from_env_spec(
    name: str,
    env_id: str,
    env_kwargs: Mapping[str, Any],
    obs_dim: int,
    act_dim: int,
    ref_min_score: float | None = None,
    ref_max_score: float | None = None,
) -> Task:
    """The task a dataset's recorded env defines: its env id and kwargs, sizes and reference scores.

    The termination function follows the recorded kwargs (``termination.termination_for``); missing
    reference scores become NaN (``has_reference_scores`` False). ``ValueError`` for an env id of a robot
    that is not registered, or kwargs whose health test is not supported.
    """
    robot = ROBOTS.get(env_id.split("-")[0])
    if robot is None:
        raise ValueError(f"env {env_id}: not a MuJoCo locomotion env this project knows ({', '.join(ROBOTS)})")
    kwargs = dict(env_kwargs)
    try:
        term = termination.termination_for(robot, kwargs)
    except ValueError as err:
        raise ValueError(f"env {env_id}: {err}") from None
    has_refs = ref_min_score is not None and ref_max_score is not None
    return Task(
        name, env_id, int(obs_dim), int(act_dim), term,
        float(ref_min_score) if has_refs else math.nan, float(ref_max_score) if has_refs else math.nan,
        env_kwargs=kwargs,
    )

