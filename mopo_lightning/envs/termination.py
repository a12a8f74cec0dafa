"""Batched termination functions of the real MuJoCo tasks (MOPO reference, section 5).

Written the way gymnasium's ``is_healthy`` decides ``terminated``, on the next observation, so that model
rollouts stop exactly where the simulator would. Pure tensor code: no Lightning, no gymnasium.

A next observation with NaN or inf anywhere terminates in every task. In the real env such a state
means the simulator has blown up (MuJoCo warns and the physics is unusable); a model rollout must stop
there rather than feed it back to the ensemble. For HalfCheetah this is our addition: its env never
terminates, but it never produces a non-finite observation either, so on real data nothing changes.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

TerminationFn = Callable[[Tensor, Tensor, Tensor], Tensor]
"""(obs [*B, O], action [*B, A], next_obs [*B, O]) -> terminated [*B] (bool)."""


def _finite(next_obs: Tensor) -> Tensor:
    """[*B] True where every entry of the next observation is finite."""
    return torch.isfinite(next_obs).all(dim=-1)


def never(obs: Tensor, action: Tensor, next_obs: Tensor) -> Tensor:
    """HalfCheetah: the env never terminates; only a non-finite next state does (module docstring)."""
    return ~_finite(next_obs)


def hopper(obs: Tensor, action: Tensor, next_obs: Tensor) -> Tensor:
    """Hopper-v4 ``is_healthy`` on the observation.

    obs[0] is the torso height, obs[1] the torso angle, obs[1:] the rest of the state (velocities
    clipped to +-10 by the env). NaN fails every comparison; the explicit finiteness test also catches
    an infinite height, which ``z > 0.7`` alone would pass (MOPO reference section 5).
    """
    z, angle, rest = next_obs[..., 0], next_obs[..., 1], next_obs[..., 1:]
    healthy_state = ((rest > -100.0) & (rest < 100.0)).all(dim=-1)
    healthy = _finite(next_obs) & healthy_state & (z > 0.7) & (angle > -0.2) & (angle < 0.2)
    return ~healthy


def walker2d(obs: Tensor, action: Tensor, next_obs: Tensor) -> Tensor:
    """Walker2d-v4 ``is_healthy``: 0.8 < height < 2 and -1 < angle < 1; and a finite state."""
    z, angle = next_obs[..., 0], next_obs[..., 1]
    healthy = _finite(next_obs) & (z > 0.8) & (z < 2.0) & (angle > -1.0) & (angle < 1.0)
    return ~healthy


def ant(obs: Tensor, action: Tensor, next_obs: Tensor) -> Tensor:
    """Ant-v4 ``is_healthy`` on the 27-dim observation: finite state and 0.2 <= z <= 1."""
    z = next_obs[..., 0]
    healthy = _finite(next_obs) & (z >= 0.2) & (z <= 1.0)
    return ~healthy
