"""Fitted Q Evaluation (FQE): the value of a fixed policy from offline transitions, without the real env.

Sources: Le, Voloshin and Yue 2019, "Batch Policy Learning under Constraints" (ICML, algorithm 3: FQE); Paine et
al. 2020, "Hyperparameter Selection for Offline Reinforcement Learning" (FQE as the offline selector); reference
code d3rlpy 2.x ``d3rlpy/ope/fqe.py`` (``FQEConfig``, ``FQE.inner_update``) and ``d3rlpy/ope/torch/fqe_impl.py``.
``FQEConfig``'s defaults are d3rlpy's: Adam at 1e-4 (``make_optimizer_field`` -> ``AdamFactory``, betas (0.9, 0.999),
no weight decay), batch 100, gamma 0.99, one critic, a hard target copy every 100 updates, an MLP of 256 x 256 ReLU on
the concatenated observation and action (``VectorEncoderFactory.hidden_units``), MSE loss
(``ContinuousMeanQFunctionForwarder.compute_error``); with several critics, the loss is the sum of their MSEs, the
target their minimum, the estimate their mean (d3rlpy's ensemble ``compute_target`` "min", ``compute_expected_q``
"mean").

    y = r + gamma * (1 - terminated) * Q_target(s', pi(s')),   s' = ("next", "observation")

The policy acts on the NEXT observation: d3rlpy issue #93 was ``predict(batch.observations)`` there. ``truncated``
rows bootstrap (a time limit is not an end of the MDP), as SAC does here. The estimate is the mean of
Q(s0, pi(s0)) over the data's episode start states (d3rlpy's ``InitialStateValueEstimationEvaluator``): a
discounted value, which ``normalized_score`` converts to the task's D4RL score through a return scale.

Vectorised over samples (the one Python loop is over updates); batches drawn from a seeded ``torch.Generator``;
the critics initialised under a forked, seeded global RNG; CPU by default. A stochastic policy draws its own
actions (seed it for reproducible numbers); ``*_action_samples`` average several draws per state.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

import torch
from tensordict import TensorDict
from torch import Tensor, nn

from mopo_lightning.envs.tasks import Task
from mopo_lightning.policy.networks import mlp
from mopo_lightning.transitions import ACTION, DONE, NEXT_OBSERVATION, OBSERVATION, REWARD, TERMINATED

Policy = Callable[[Tensor], Tensor]
"""obs [B, O] -> action [B, A], deterministic or sampled; e.g. ``lambda obs: sac.act(obs, deterministic=True)``."""


@dataclass(frozen=True)
class FQEConfig:
    """FQE's knobs; defaults from d3rlpy's ``FQEConfig`` except where a field says otherwise."""

    learning_rate: float = 1e-4
    """Adam step size (d3rlpy)."""
    batch_size: int = 100
    """Transitions per update (d3rlpy)."""
    gamma: float = 0.99
    """Discount of the evaluated return (d3rlpy)."""
    n_critics: int = 1
    """Q networks: summed losses, min target, mean estimate (d3rlpy)."""
    target_update_interval: int = 100
    """Updates between hard copies of the critics into the target (d3rlpy)."""
    hidden_dim: int = 256
    """Width of each hidden ReLU layer (d3rlpy's 256 x 256 encoder)."""
    num_layers: int = 2
    """Hidden layers (d3rlpy's 256 x 256 encoder)."""
    num_updates: int = 100_000
    """Gradient updates; d3rlpy leaves it to ``fit(n_steps)``. Here 1000 target copies: gamma^1000 < 1e-4."""
    target_action_samples: int = 1
    """Policy draws averaged per next state in the target (d3rlpy: 1; unbiased for a stochastic policy too)."""
    start_action_samples: int = 1
    """Policy draws averaged per start state in the estimate (1 for a deterministic policy)."""
    seed: int = 0
    """Seed of the critics' initialisation and of the batch draws."""
    device: str = "cpu"
    """Where the critics and the data live."""

    def __post_init__(self) -> None:
        counts = ("batch_size", "n_critics", "target_update_interval", "hidden_dim", "num_layers")
        counts += ("target_action_samples", "start_action_samples")
        if bad := [f"{name}={getattr(self, name)}" for name in counts if getattr(self, name) < 1]:
            raise ValueError(f"FQEConfig needs positive {', '.join(bad)}")
        if self.num_updates < 0 or not 0.0 <= self.gamma <= 1.0:
            raise ValueError(f"FQEConfig needs num_updates >= 0 and gamma in [0, 1]: {self}")


class QEnsemble(nn.Module):
    """``n_critics`` MLPs Q(s, a): obs [B, O], action [B, A] -> [C, B]."""

    def __init__(
        self, obs_dim: int, act_dim: int, n_critics: int = 1, hidden_dim: int = 256, num_layers: int = 2
    ):
        super().__init__()
        self.nets = nn.ModuleList(mlp(obs_dim + act_dim, 1, hidden_dim, num_layers) for _ in range(n_critics))

    def forward(self, obs: Tensor, action: Tensor) -> Tensor:
        x = torch.cat([obs, action], dim=-1)
        return torch.stack([net(x).squeeze(-1) for net in self.nets])  # [C, B]

    @torch.no_grad()
    def policy_value(self, policy: Policy, obs: Tensor, samples: int = 1, reduction: str = "mean") -> Tensor:
        """E_{a ~ pi(s)} Q(s, a) by ``samples`` draws per state, critics reduced by "mean" or "min": [B]."""
        repeated = obs.repeat(samples, 1)  # [S * B, O]: draw s of row b is row s * B + b
        q = self(repeated, policy(repeated))  # [C, S * B]
        q = q.min(dim=0).values if reduction == "min" else q.mean(dim=0)
        return q.view(samples, obs.shape[0]).mean(dim=0)


@dataclass(frozen=True)
class FittedQ:
    """FQE's critics and the mean TD loss of its last ``target_update_interval`` updates."""

    critic: QEnsemble
    """The fitted Q networks (not the target copy)."""
    loss: float
    """Mean TD loss over the last target interval (NaN after no update)."""
    updates: int
    """Gradient updates made."""


def fit_fqe(data: TensorDict, policy: Policy, config: FQEConfig = FQEConfig()) -> FittedQ:
    """Fit Q^pi on transitions ``data`` [N] (``transitions.py`` keys) by ``config.num_updates`` regressions."""
    device = torch.device(config.device)
    obs = data[OBSERVATION].to(device, torch.float32)  # [N, O]
    action = data[ACTION].to(device, torch.float32)  # [N, A]
    next_obs = data[NEXT_OBSERVATION].to(device, torch.float32)  # [N, O]
    reward = data[REWARD].to(device, torch.float32).reshape(-1)  # [N]
    not_terminated = 1.0 - data[TERMINATED].to(device, torch.float32).reshape(-1)  # [N]
    n = obs.shape[0]
    if n == 0:
        raise ValueError("FQE needs at least one transition")
    with torch.random.fork_rng(devices=[]):  # seeded initialisation that leaves the caller's RNG as it was
        torch.manual_seed(config.seed)
        critic = QEnsemble(
            obs.shape[1], action.shape[1], config.n_critics, config.hidden_dim, config.num_layers
        )
    critic = critic.to(device)
    target = copy.deepcopy(critic).requires_grad_(False)
    optimizer = torch.optim.Adam(critic.parameters(), lr=config.learning_rate)
    generator = torch.Generator(device=device).manual_seed(config.seed)
    losses = torch.zeros(config.target_update_interval, device=device)
    for update in range(1, config.num_updates + 1):
        rows = torch.randint(n, (config.batch_size,), generator=generator, device=device)  # [B]
        next_q = target.policy_value(policy, next_obs[rows], config.target_action_samples, "min")  # [B]
        y = reward[rows] + config.gamma * not_terminated[rows] * next_q  # [B]
        q = critic(obs[rows], action[rows])  # [C, B]
        loss = (q - y).pow(2).mean(dim=-1).sum()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        losses[(update - 1) % config.target_update_interval] = loss.detach()
        if update % config.target_update_interval == 0:
            target.load_state_dict(critic.state_dict())
    recent = min(config.num_updates, config.target_update_interval)
    return FittedQ(critic, float(losses[:recent].mean()) if recent else math.nan, config.num_updates)


def episode_starts(data: TensorDict, rtol: float = 1e-5, atol: float = 1e-6) -> Tensor:
    """Rows that begin an episode, [N] bool: row 0, rows after a ``done`` row, and rows whose observation is not
    the previous row's next observation (an episode whose last rows were dropped, as D4RL's qlearning mode drops
    time-limit rows). Needs the rows in their recorded order."""
    obs, next_obs = data[OBSERVATION], data[NEXT_OBSERVATION]
    done = data[DONE].reshape(-1)
    starts = torch.ones(obs.shape[0], dtype=torch.bool, device=obs.device)
    continues = ~done[:-1] & torch.isclose(next_obs[:-1], obs[1:], rtol=rtol, atol=atol).all(dim=-1)
    starts[1:] = ~continues
    return starts


def start_states(data: TensorDict) -> Tensor:
    """The observations of ``episode_starts`` [S, O]; refuses data that does not look like ordered episodes."""
    mask = episode_starts(data)
    if mask.sum() * 2 > mask.numel() and mask.numel() > 1:
        raise ValueError(
            f"{int(mask.sum())} of {mask.numel()} rows look like episode starts: the rows are not whole episodes "
            "in their recorded order (shuffled, or model rollouts); pass the start states explicitly"
        )
    return data[OBSERVATION][mask]


def return_scale(gamma: float, horizon: int) -> float:
    """Per-episode (undiscounted) return per unit of discounted value, for a constant reward over ``horizon``
    steps: H (1 - gamma) / (1 - gamma^H). An approximation (rewards are not constant), but monotone, so it keeps
    the ranking; pass a measured ratio where one is known (e.g. the data's returns over their discounted values)."""
    return horizon * (1.0 - gamma) / (1.0 - gamma**horizon) if gamma < 1.0 else 1.0


def normalized_score(value: float, task: Task, scale: float) -> float:
    """The task's D4RL normalised score of the per-episode return ``value * scale``; NaN for variant tasks."""
    return float(task.normalized_score(value * scale))


@dataclass(frozen=True)
class FQEResult:
    """FQE's estimate of one policy; ``as_dict()`` is JSON-ready."""

    value: float
    """Mean Q(s0, pi(s0)) over the start states: the discounted value."""
    value_std: float
    """Standard deviation of Q(s0, pi(s0)) over the start states (0 for one)."""
    start_states: int
    """Start states averaged."""
    updates: int
    """Gradient updates of the critics."""
    loss: float
    """Mean TD loss over the last target interval."""
    normalized_score: float | None
    """D4RL normalised score of ``value * return_scale``, when a task and a scale were given."""

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def estimate_value(
    critic: QEnsemble, policy: Policy, starts: Tensor, action_samples: int = 1
) -> tuple[float, float]:
    """Mean and standard deviation over ``starts`` [S, O] of Q(s0, pi(s0)) (critics averaged)."""
    if starts.shape[0] == 0:
        raise ValueError("no start states to average Q(s0, pi(s0)) over")
    device = next(critic.parameters()).device
    v = critic.policy_value(policy, starts.to(device, torch.float32), action_samples, reduction="mean")  # [S]
    return float(v.mean()), float(v.std(unbiased=False))


def evaluate_policy(
    data: TensorDict,
    policy: Policy,
    config: FQEConfig = FQEConfig(),
    starts: Tensor | None = None,
    task: Task | None = None,
    scale: float | None = None,
) -> FQEResult:
    """Fit FQE on ``data`` and estimate the policy's value from ``starts`` (default: ``start_states(data)``);
    with ``task`` and ``scale`` (see ``return_scale``), also its D4RL normalised score."""
    starts = start_states(data) if starts is None else starts
    fitted = fit_fqe(data, policy, config)
    mean, std = estimate_value(fitted.critic, policy, starts, config.start_action_samples)
    score = None if task is None or scale is None else normalized_score(mean, task, scale)
    return FQEResult(mean, std, int(starts.shape[0]), fitted.updates, fitted.loss, score)
