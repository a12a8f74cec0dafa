"""Task registry: what MOPO needs to know about each MuJoCo task.

Sources: MOPO reference sections 5 and 6 (termination functions, D4RL reference scores) and the
gymnasium ``*-v4`` environments, whose observation layouts match D4RL's. Termination functions are
written as the real environments decide ``terminated`` (gymnasium's ``is_healthy``), so that model
rollouts stop exactly where the simulator would.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np
import torch
from torch import Tensor

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
    """One MuJoCo task: env, sizes, termination and D4RL score normalisation."""

    name: str
    env_id: str
    obs_dim: int
    act_dim: int
    termination_fn: TerminationFn
    ref_min_score: float
    ref_max_score: float
    env_kwargs: dict[str, Any] = field(default_factory=dict)

    def normalized_score(self, returns: float | np.ndarray | Tensor) -> float | np.ndarray | Tensor:
        """D4RL normalised score: 100 * (return - min) / (max - min)."""
        return 100.0 * (returns - self.ref_min_score) / (self.ref_max_score - self.ref_min_score)

    def make_env(self, **kwargs: Any):
        """The real gymnasium env (with its 1000-step time limit)."""
        import warnings

        import gymnasium as gym

        with warnings.catch_warnings():
            # v4 is chosen on purpose: its observations match D4RL's (v5 changes some dynamics).
            warnings.filterwarnings("ignore", message=".*is out of date.*")
            return gym.make(self.env_id, **{**self.env_kwargs, **kwargs})


TASKS: dict[str, Task] = {
    "hopper": Task("hopper", "Hopper-v4", 11, 3, hopper_termination, -20.272305, 3234.3),
    "walker2d": Task("walker2d", "Walker2d-v4", 17, 6, walker2d_termination, 1.629008, 4592.3),
    "halfcheetah": Task("halfcheetah", "HalfCheetah-v4", 17, 6, _never, -280.178953, 12135.0),
    # MOPO's ant uses the 27-dim observation (qpos[2:] + qvel, no contact forces), which is
    # Ant-v4's default; D4RL's 111-dim ant files carry contact forces and do not fit this task.
    "ant": Task(
        "ant", "Ant-v4", 27, 8, ant_termination, -325.6, 3879.7, env_kwargs={"use_contact_forces": False}
    ),
}


def get_task(name: str | Task) -> Task:
    """Look a task up by name, or by a D4RL dataset name such as ``walker2d-medium-replay-v2``."""
    if isinstance(name, Task):
        return name
    key = name.strip().lower()
    if key in TASKS:
        return TASKS[key]
    prefix = re.split(r"[-_]", key, maxsplit=1)[0]
    if prefix in TASKS:
        return TASKS[prefix]
    raise KeyError(f"unknown task {name!r}; known tasks: {', '.join(sorted(TASKS))}")
