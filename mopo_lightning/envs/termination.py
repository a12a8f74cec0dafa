"""Batched termination functions of the real MuJoCo tasks (MOPO reference, section 5).

Written the way gymnasium's ``is_healthy`` decides ``terminated``, on the next observation, so that model
rollouts stop exactly where the simulator would. Pure tensor code: no Lightning, no gymnasium.

A next observation with NaN or inf anywhere terminates in every task. In the real env such a state
means the simulator has blown up (MuJoCo warns and the physics is unusable); a model rollout must stop
there rather than feed it back to the ensemble. For HalfCheetah this is our addition: its env never
terminates, but it never produces a non-finite observation either, so on real data nothing changes.

Gymnasium v4 and v5 (Minari's data) decide health by the same rules with the same defaults
(``hopper_v5.py``, ``walker2d_v5.py``, ``ant_v5.py``: ``is_healthy``), so one function serves both; the
ranges are keyword arguments named as the v5 env's own (``healthy_z_range``, ...), and
``termination_for`` binds a dataset's recorded env kwargs to them. Ant's observation keeps the torso z in
column 0 whether or not contact forces follow (27 or 105 columns). HalfCheetah never terminates.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Mapping
from typing import Any

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


def hopper(
    obs: Tensor,
    action: Tensor,
    next_obs: Tensor,
    healthy_z_range: tuple[float, float] = (0.7, math.inf),
    healthy_angle_range: tuple[float, float] = (-0.2, 0.2),
    healthy_state_range: tuple[float, float] = (-100.0, 100.0),
) -> Tensor:
    """Hopper-v4/v5 ``is_healthy`` on the observation (defaults: the envs' own ranges).

    obs[0] is the torso height, obs[1] the torso angle, obs[1:] the rest of the state (velocities
    clipped to +-10 by the env). NaN fails every comparison; the explicit finiteness test also catches
    an infinite height, which ``z > 0.7`` alone would pass (MOPO reference section 5).
    """
    z, angle, rest = next_obs[..., 0], next_obs[..., 1], next_obs[..., 1:]
    (s_lo, s_hi), (z_lo, z_hi), (a_lo, a_hi) = healthy_state_range, healthy_z_range, healthy_angle_range
    healthy_state = ((rest > s_lo) & (rest < s_hi)).all(dim=-1)
    healthy = _finite(next_obs) & healthy_state & (z > z_lo) & (z < z_hi) & (angle > a_lo) & (angle < a_hi)
    return ~healthy


def walker2d(
    obs: Tensor,
    action: Tensor,
    next_obs: Tensor,
    healthy_z_range: tuple[float, float] = (0.8, 2.0),
    healthy_angle_range: tuple[float, float] = (-1.0, 1.0),
) -> Tensor:
    """Walker2d-v4/v5 ``is_healthy``: 0.8 < height < 2 and -1 < angle < 1 (defaults); and a finite state."""
    z, angle = next_obs[..., 0], next_obs[..., 1]
    (z_lo, z_hi), (a_lo, a_hi) = healthy_z_range, healthy_angle_range
    healthy = _finite(next_obs) & (z > z_lo) & (z < z_hi) & (angle > a_lo) & (angle < a_hi)
    return ~healthy


def ant(
    obs: Tensor, action: Tensor, next_obs: Tensor, healthy_z_range: tuple[float, float] = (0.2, 1.0)
) -> Tensor:
    """Ant-v4/v5 ``is_healthy`` (27 or 105 columns, z first): finite state and 0.2 <= z <= 1 (default)."""
    z = next_obs[..., 0]
    z_lo, z_hi = healthy_z_range
    healthy = _finite(next_obs) & (z >= z_lo) & (z <= z_hi)
    return ~healthy


RANGE_KWARGS: dict[str, tuple[str, ...]] = {
    "hopper": ("healthy_z_range", "healthy_angle_range", "healthy_state_range"),
    "walker2d": ("healthy_z_range", "healthy_angle_range"),
    "ant": ("healthy_z_range",),
    "halfcheetah": (),
}
"""The env kwargs each robot's health test reads (gymnasium v5 names)."""

_BY_ROBOT: dict[str, TerminationFn] = {"hopper": hopper, "walker2d": walker2d, "ant": ant, "halfcheetah": never}


def termination_for(robot: str, env_kwargs: Mapping[str, Any]) -> TerminationFn:
    """The termination function of ``robot`` under an env's kwargs (a Minari dataset's recorded spec).

    ``terminate_when_unhealthy=False`` gives ``never``; recorded ``healthy_*`` ranges replace the defaults
    (``functools.partial``, so the function stays picklable). Kwargs that move the observation columns
    (``exclude_current_positions_from_observation=False``) are refused with ``ValueError``.
    """
    if robot not in _BY_ROBOT:
        raise ValueError(f"no termination function for {robot!r}; known: {', '.join(_BY_ROBOT)}")
    if not env_kwargs.get("exclude_current_positions_from_observation", True):
        raise ValueError(f"{robot}: exclude_current_positions_from_observation=False moves the observation "
                         "columns the health test reads; not supported")
    if robot == "halfcheetah" or not env_kwargs.get("terminate_when_unhealthy", True):
        return never
    ranges = {k: tuple(float(x) for x in env_kwargs[k]) for k in RANGE_KWARGS[robot] if k in env_kwargs}
    return functools.partial(_BY_ROBOT[robot], **ranges) if ranges else _BY_ROBOT[robot]
