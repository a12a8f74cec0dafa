"""Task registry: what MOPO needs to know about each MuJoCo task.

A pure registry: env ids, sizes, D4RL reference scores (MOPO reference section 6) and references to the
functions defined below it (``envs/termination.py``, ``envs/rewards.py``). The gymnasium ``*-v4``
environments are used because their observation layouts match D4RL's; ``envs.wrappers.make_env`` builds them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from torch import Tensor

from mopo_lightning.envs import termination
from mopo_lightning.envs.rewards import REWARDS, RewardFn
from mopo_lightning.envs.termination import TerminationFn


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
}


def get_task(name: str | Task) -> Task:
    """Look a task up by name, or by a D4RL dataset name such as ``walker2d-medium-replay-v2``.

    The longest registered name that the (``_`` -> ``-``) name equals or starts with, then ``-``, wins:
    ``halfcheetah-jump`` is the variant, ``halfcheetah-medium-v2`` is ``halfcheetah``.
    """
    if isinstance(name, Task):
        return name
    key = name.strip().lower().replace("_", "-")
    for known in sorted(TASKS, key=len, reverse=True):
        if key == known or key.startswith(known + "-"):
            return TASKS[known]
    raise KeyError(f"unknown task {name!r}; known tasks: {', '.join(sorted(TASKS))}")
