"""Batched termination functions of the real MuJoCo tasks (MOPO reference, section 5).

Written the way gymnasium's ``is_healthy`` decides ``terminated``, on the next observation, so that model
rollouts stop exactly where the simulator would. Pure tensor code: no Lightning, no gymnasium.
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import Tensor

TerminationFn = Callable[[Tensor, Tensor, Tensor], Tensor]
"""(obs [*B, O], action [*B, A], next_obs [*B, O]) -> terminated [*B] (bool)."""


def never(obs: Tensor, action: Tensor, next_obs: Tensor) -> Tensor:
    """HalfCheetah: the env never terminates."""
    return torch.zeros(next_obs.shape[:-1], dtype=torch.bool, device=next_obs.device)


def hopper(obs: Tensor, action: Tensor, next_obs: Tensor) -> Tensor:
    """Hopper-v4 ``is_healthy`` on the observation.

    obs[0] is the torso height, obs[1] the torso angle, obs[1:] the rest of the state (velocities
    clipped to +-10 by the env). NaN fails every comparison, so non-finite rows terminate.
    """
    z, angle, rest = next_obs[..., 0], next_obs[..., 1], next_obs[..., 1:]
    healthy_state = ((rest > -100.0) & (rest < 100.0)).all(dim=-1)
    healthy = healthy_state & (z > 0.7) & (angle > -0.2) & (angle < 0.2)
    return ~healthy


def walker2d(obs: Tensor, action: Tensor, next_obs: Tensor) -> Tensor:
    """Walker2d-v4 ``is_healthy``: 0.8 < height < 2 and -1 < angle < 1."""
    z, angle = next_obs[..., 0], next_obs[..., 1]
    healthy = (z > 0.8) & (z < 2.0) & (angle > -1.0) & (angle < 1.0)
    return ~healthy


def ant(obs: Tensor, action: Tensor, next_obs: Tensor) -> Tensor:
    """Ant-v4 ``is_healthy`` on the 27-dim observation: finite state and 0.2 <= z <= 1."""
    z = next_obs[..., 0]
    healthy = torch.isfinite(next_obs).all(dim=-1) & (z >= 0.2) & (z <= 1.0)
    return ~healthy
