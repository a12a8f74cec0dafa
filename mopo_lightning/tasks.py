"""Task registry: what MOPO needs to know about each MuJoCo task.

Sources: MOPO reference sections 5 and 6 (termination functions, D4RL reference scores) and the
gymnasium ``*-v4`` environments, whose observation layouts match D4RL's. Termination functions are
written as the real environments decide ``terminated`` (gymnasium's ``is_healthy``), so that model
rollouts stop exactly where the simulator would.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np
import torch
from torch import Tensor

from mopo_lightning.envs.wrappers import REWARDS, RelabelReward, RewardFn

TerminationFn = Callable[[Tensor, Tensor, Tensor], Tensor]
"""(obs [*B, O], action [*B, A], next_obs [*B, O]) -> terminated [*B] (bool)."""


def _never(obs: Tensor, action: Tensor, next_obs: Tensor) -> Tensor:
    return torch.zeros(next_obs.shape[:-1], dtype=torch.bool, device=next_obs.device)


def hopper_termination(obs: Tensor, action: Tensor, next_obs: Tensor) -> Tensor:
    """Hopper-v4 ``is_healthy`` on the observation.

    obs[0] is the torso height, obs[1] the torso angle, obs[1:] the rest of the state (velocities
    clipped to +-10 by the env). NaN fails every comparison, so non-finite rows terminate.
    """
    z, angle, rest = next_obs[..., 0], next_obs[..., 1], next_obs[..., 1:]
    healthy_state = ((rest > -100.0) & (rest < 100.0)).all(dim=-1)
    healthy = healthy_state & (z > 0.7) & (angle > -0.2) & (angle < 0.2)
    return ~healthy


def walker2d_termination(obs: Tensor, action: Tensor, next_obs: Tensor) -> Tensor:
    """Walker2d-v4 ``is_healthy``: 0.8 < height < 2 and -1 < angle < 1."""
    z, angle = next_obs[..., 0], next_obs[..., 1]
    healthy = (z > 0.8) & (z < 2.0) & (angle > -1.0) & (angle < 1.0)
    return ~healthy


def ant_termination(obs: Tensor, action: Tensor, next_obs: Tensor) -> Tensor:
    """Ant-v4 ``is_healthy`` on the 27-dim observation: finite state and 0.2 <= z <= 1."""
    z = next_obs[..., 0]
    healthy = torch.isfinite(next_obs).all(dim=-1) & (z >= 0.2) & (z <= 1.0)
    return ~healthy


@dataclass(frozen=True)
class Task:
    """One MuJoCo task: env, sizes, termination and D4RL score normalisation.

    A variant (MOPO's out-of-distribution tasks, reference section 8) has a ``relabel`` reward: the
    dataset's rewards are recomputed from each row's infos, and ``make_env`` scores the same reward.
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

    def make_env(self, **kwargs: Any):
        """The real gymnasium env (with its 1000-step time limit), scoring a variant's own reward."""
        import warnings

        import gymnasium as gym

        with warnings.catch_warnings():
            # v4 is chosen on purpose: its observations match D4RL's (v5 changes some dynamics).
            warnings.filterwarnings("ignore", message=".*is out of date.*")
            env = gym.make(self.env_id, **{**self.env_kwargs, **kwargs})
        if self.relabel is not None:
            env = RelabelReward(env, self.relabel)
        return env


TASKS: dict[str, Task] = {
    "hopper": Task("hopper", "Hopper-v4", 11, 3, hopper_termination, -20.272305, 3234.3),
    "walker2d": Task("walker2d", "Walker2d-v4", 17, 6, walker2d_termination, 1.629008, 4592.3),
    "halfcheetah": Task("halfcheetah", "HalfCheetah-v4", 17, 6, _never, -280.178953, 12135.0),
    # MOPO's ant uses the 27-dim observation (qpos[2:] + qvel, no contact forces), which is
    # Ant-v4's default; D4RL's 111-dim ant files carry contact forces and do not fit this task.
    "ant": Task(
        "ant", "Ant-v4", 27, 8, ant_termination, -325.6, 3879.7, env_kwargs={"use_contact_forces": False}
    ),
    # MOPO's out-of-distribution tasks (reference section 8): same dynamics, relabelled reward, no
    # D4RL reference scores (normalized_score gives NaN).
    "halfcheetah-jump": Task(
        "halfcheetah-jump", "HalfCheetah-v4", 17, 6, _never, math.nan, math.nan,
        relabel=REWARDS["halfcheetah-jump"],
    ),
    "ant-angle": Task(
        "ant-angle", "Ant-v4", 27, 8, ant_termination, math.nan, math.nan,
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
