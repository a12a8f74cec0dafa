"""SAC loss terms, each its own function returning a TensorDict of a ``loss_*`` term plus diagnostics.

The split follows TorchRL's ``torchrl/objectives/sac.py`` (``loss_qvalue``, ``loss_actor``,
``loss_alpha``, with ``alpha`` and ``entropy`` beside them); the maths follows softlearning, the code
MOPO's authors build on (SAC: Haarnoja et al. 2018, arXiv 1812.05905): Q loss 0.5 * MSE summed over
the critics, actor loss alpha * log pi - min Q, alpha loss -log_alpha * (log pi + target_entropy).

Unlike TorchRL's single ``forward``, the terms are computed one after the other by
``SACModule.update``: the actor's after the critics' optimizer step (the actor sees the freshly stepped
critics), as softlearning does; the alpha term reads only the actor's detached log pi, so one backward
serves both. Pure tensor code (no Lightning), so each term can be tested, timed
and ``torch.compile``d alone.
"""

from __future__ import annotations

import torch
from tensordict import TensorDict
from torch import Tensor

from mopo_lightning.policy.networks import EnsembleQ, TanhGaussianActor


@torch.no_grad()
def soft_bellman_target(
    actor: TanhGaussianActor,
    critic_target: EnsembleQ,
    next_obs: Tensor,
    reward: Tensor,
    terminated: Tensor,
    alpha: Tensor,
    gamma: float,
) -> Tensor:
    """r + gamma * (1 - terminated) * (min Q'(s', a') - alpha * log pi(a'|s')), a' ~ pi(s') -> [B, 1].

    Only ``terminated`` stops bootstrapping (SAC paper; a time-limit truncation is not a true end).
    """
    next_action, next_log_prob = actor.sample(next_obs)  # [B, A], [B, 1]
    next_q = critic_target(next_obs, next_action).amin(dim=0) - alpha * next_log_prob  # [B, 1]
    return reward + gamma * (~terminated).to(reward.dtype) * next_q


def qvalue_loss(critic: EnsembleQ, obs: Tensor, action: Tensor, target: Tensor) -> TensorDict:
    """``loss_qvalue`` = 0.5 * MSE of every critic to ``target`` [B, 1], summed over critics.

    All critics run in one forward. Diagnostics: ``q_mean``, ``q_max`` of Q(s, a) over critics and rows.
    """
    q = critic(obs, action)  # [num_q, B, 1]
    loss = 0.5 * (q - target).pow(2).mean(dim=(1, 2)).sum()
    q = q.detach()
    return TensorDict({"loss_qvalue": loss, "q_mean": q.mean(), "q_max": q.max()}, batch_size=[])


def actor_loss(actor: TanhGaussianActor, critic: EnsembleQ, obs: Tensor, alpha: Tensor) -> TensorDict:
    """``loss_actor`` = mean(alpha * log pi(a|s) - min Q(s, a)), a ~ pi(s) reparameterised.

    The critics run on detached weights: gradients reach the actor through the action only, with no
    wasted weight-gradient matmuls and the critics' ``.grad`` left alone. Also returns ``log_prob``
    [B, 1] (detached, for ``alpha_loss``) and ``entropy`` = -mean(log_prob).
    """
    action, log_prob = actor.sample(obs)  # [B, A], [B, 1]
    q_pi = critic(obs, action, detach_params=True).amin(dim=0)  # [B, 1]
    loss = (alpha * log_prob - q_pi).mean()
    log_prob = log_prob.detach()
    return TensorDict({"loss_actor": loss, "log_prob": log_prob, "entropy": -log_prob.mean()}, batch_size=[])


def alpha_loss(log_alpha: Tensor, log_prob: Tensor, target_entropy: float) -> TensorDict:
    """``loss_alpha`` = -mean(log_alpha * (log_prob + target_entropy)): alpha rises when the entropy is
    below its target and falls when above. ``alpha`` is exp(log_alpha) before this step."""
    loss = -(log_alpha * (log_prob + target_entropy)).mean()
    return TensorDict({"loss_alpha": loss, "alpha": log_alpha.detach().exp()}, batch_size=[])
