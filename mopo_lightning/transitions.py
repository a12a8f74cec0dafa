"""The transition TensorDict: keys declared once, one builder used everywhere.

TorchRL's key convention (batch size [N]):
- ``observation`` [N, O] float32, ``action`` [N, A] float32;
- ``("next", "observation")`` [N, O] float32, ``("next", "reward")`` [N, 1] float32;
- ``("next", "terminated")``, ``("next", "truncated")``, ``("next", "done")`` [N, 1] bool, with
  ``done = terminated | truncated``.
SAC bootstraps on ``terminated`` only: a time-limit ``truncated`` row still bootstraps.
"""

from __future__ import annotations

import torch
from tensordict import TensorDict
from torch import Tensor

OBSERVATION = "observation"
ACTION = "action"
NEXT_OBSERVATION = ("next", "observation")
REWARD = ("next", "reward")
TERMINATED = ("next", "terminated")
TRUNCATED = ("next", "truncated")
DONE = ("next", "done")

TRANSITION_KEYS = (OBSERVATION, ACTION, NEXT_OBSERVATION, REWARD, TERMINATED, TRUNCATED, DONE)
"""Every key of a transition batch, in storage order."""


def transitions(
    observation: Tensor,
    action: Tensor,
    next_observation: Tensor,
    reward: Tensor,
    terminated: Tensor,
    truncated: Tensor | None = None,
) -> TensorDict:
    """A transition TensorDict [N] from row tensors; rewards and flags may be [N] or [N, 1].

    ``truncated`` defaults to all False (model rollouts); ``done`` is derived, never passed. The
    parameters follow ``TRANSITION_KEYS``, so stored per-key tensors rebuild a batch as
    ``transitions(*leaves[:-1])``.
    """
    n = observation.shape[0]
    reward = reward.reshape(n, 1)
    terminated = terminated.reshape(n, 1).to(torch.bool)
    truncated = torch.zeros_like(terminated) if truncated is None else truncated.reshape(n, 1).to(torch.bool)
    return TensorDict(
        {
            OBSERVATION: observation,
            ACTION: action,
            "next": {
                "observation": next_observation,
                "reward": reward,
                "terminated": terminated,
                "truncated": truncated,
                "done": terminated | truncated,
            },
        },
        batch_size=[n],
    )
