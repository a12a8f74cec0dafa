"""SAC networks: tanh-Gaussian actor and twin Q critics, as plain ``nn.Module``s.

Sources: SAC (Haarnoja et al. 2018, arXiv 1812.05905) and the softlearning code that MOPO's authors
build on: MLPs of 2 x 256 ReLU, log-std clipped to [-20, 2], actions squashed by tanh with the
change-of-variables correction of the log-density (SAC paper, appendix C).

The two Q networks are stored as one ensemble (weights ``[2, in, out]``, one ``baddbmm`` per hidden layer,
a broadcast dot product for the one-unit output): one forward evaluates both, and the target update is a
single fused ``_foreach_lerp_`` over six tensors. ``benchmarks/sac_update.py`` measures this against two
separate ``nn.Sequential`` critics.
"""

from __future__ import annotations

import itertools
import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

_LOG_PROB_CONST = -0.5 * math.log(2 * math.pi) - 2.0 * math.log(2.0)
"""The constant of the tanh-Gaussian log-density per action dimension (see ``TanhGaussianActor.sample``)."""
CPU_ACT_CHUNK = 1024
"""Rows per forward in ``TanhGaussianActor.act`` on CPU: [chunk, 256] activations stay in cache. The policy's
share of a 50,000-row rollout step, HalfCheetah sizes, one thread: 145 ms in one batch (with the log-density
``sample`` computes), 84 ms in chunks of 1024, 87 at 512 and 2048, 106 at 8192 (docs/performance.md)."""


def mlp(in_dim: int, out_dim: int, hidden_dim: int = 256, num_layers: int = 2) -> nn.Sequential:
    """``num_layers`` hidden ReLU layers of ``hidden_dim``, then a linear output layer.

    The ReLUs work in place (``nn.Linear``'s backward does not read its output): no new activation tensor.
    """
    layers: list[nn.Module] = []
    dim = in_dim
    for _ in range(num_layers):
        layers += [nn.Linear(dim, hidden_dim), nn.ReLU(inplace=True)]
        dim = hidden_dim
    layers.append(nn.Linear(dim, out_dim))
    return nn.Sequential(*layers)


class TanhGaussianActor(nn.Module):
    """pi(a | s) = tanh(N(mu(s), sigma(s))): one MLP head gives mean and log-std."""

    def __init__(
        self,
        obs_dim: int,
        act_dim: int,
        hidden_dim: int = 256,
        num_layers: int = 2,
        log_std_min: float = -20.0,
        log_std_max: float = 2.0,
    ) -> None:
        super().__init__()
        self.act_dim = act_dim
        self.log_std_min, self.log_std_max = log_std_min, log_std_max
        self.net = mlp(obs_dim, 2 * act_dim, hidden_dim, num_layers)

    def forward(self, obs: Tensor) -> tuple[Tensor, Tensor]:
        """obs [B, O] -> (mean [B, A], log_std [B, A]) of the pre-tanh Gaussian."""
        mean, log_std = self.net(obs).chunk(2, dim=-1)
        # hard clip as in softlearning (not the tanh rescaling some SAC ports use)
        return mean, log_std.clamp(self.log_std_min, self.log_std_max)

    def mode(self, obs: Tensor) -> Tensor:
        """The evaluation action tanh(mean) [B, A]: no log-std and no log-density (evaluation calls it per env
        step, where those ops are most of the time)."""
        return torch.tanh(self.net(obs)[..., : self.act_dim])

    @torch.no_grad()
    def act(self, obs: Tensor, deterministic: bool = False, chunk_size: int | None = None) -> Tensor:
        """Actions only, without gradients or log-density: obs [B, O] -> action [B, A] (the rollout's and the
        evaluation's call). ``sample(obs, deterministic)[0]`` from the same draws of the global generator: the noise
        is drawn for all rows at once, then rows go through in chunks (default ``CPU_ACT_CHUNK`` on CPU, one batch
        elsewhere); a chunked matmul may round differently from one batch (its blocking depends on the rows)."""
        n = obs.shape[0]
        step = max(chunk_size or (CPU_ACT_CHUNK if obs.device.type == "cpu" else n), 1)
        noise = None if deterministic else torch.randn(n, self.act_dim, dtype=obs.dtype, device=obs.device)
        if n <= step:  # one chunk: the evaluation's few rows skip the output buffer
            return self._squash(obs, noise)
        out = obs.new_empty(n, self.act_dim)
        for start in range(0, n, step):
            rows = slice(start, start + step)
            out[rows] = self._squash(obs[rows], None if noise is None else noise[rows])
        return out

    def _squash(self, obs: Tensor, noise: Tensor | None) -> Tensor:
        """tanh(mean + noise * std), or the mode tanh(mean) without noise."""
        if noise is None:
            return self.mode(obs)
        mean, log_std = self(obs)
        return torch.tanh(torch.addcmul(mean, noise, log_std.exp()))

    def sample(self, obs: Tensor, deterministic: bool = False) -> tuple[Tensor, Tensor]:
        """Reparameterised action and its log-density: obs [B, O] -> (action [B, A], log_prob [B, 1])."""
        mean, log_std = self(obs)
        if deterministic:
            u = mean
            noise = torch.zeros_like(mean)
        else:
            noise = torch.randn_like(mean)
            u = torch.addcmul(mean, noise, log_std.exp())  # mean + noise * std
        # log N(u; mean, std) with (u - mean) / std = noise, minus log |d tanh(u) / du|, written
        # stably: log(1 - tanh(u)^2) = 2 * (log 2 - u - softplus(-2u)). The noise and the constants need no
        # gradient: they are folded into one term first, leaving five differentiable ops.
        data_term = noise.square().mul_(-0.5).add_(_LOG_PROB_CONST)  # -noise^2/2 - log(2 pi)/2 - 2 log 2
        log_prob = torch.add(data_term - log_std, u + F.softplus(-2.0 * u), alpha=2.0)
        return torch.tanh(u), log_prob.sum(dim=-1, keepdim=True)


class EnsembleQ(nn.Module):
    """``num_q`` independent Q MLPs evaluated together: Q(s, a) -> [num_q, B, 1].

    Weights are ``[num_q, in, out]`` and each hidden layer is one ``baddbmm``; every member is initialised
    like ``nn.Linear`` (uniform in +-1/sqrt(fan_in)), independently.
    """

    def __init__(
        self, obs_dim: int, act_dim: int, hidden_dim: int = 256, num_layers: int = 2, num_q: int = 2
    ):
        super().__init__()
        dims = [obs_dim + act_dim] + [hidden_dim] * num_layers + [1]
        self.num_q = num_q
        self.weights = nn.ParameterList()
        self.biases = nn.ParameterList()
        for d_in, d_out in itertools.pairwise(dims):
            bound = 1.0 / math.sqrt(d_in)
            self.weights.append(nn.Parameter(torch.empty(num_q, d_in, d_out).uniform_(-bound, bound)))
            self.biases.append(nn.Parameter(torch.empty(num_q, 1, d_out).uniform_(-bound, bound)))

    def forward(self, obs: Tensor, action: Tensor, detach_params: bool = False) -> Tensor:
        """obs [B, O], action [B, A] -> Q [num_q, B, 1].

        ``detach_params=True`` lets gradients reach the action only (the actor loss), which skips the
        weight-gradient matmuls and leaves the critics' ``.grad`` untouched.
        """
        x = torch.cat([obs, action], dim=-1).unsqueeze(0).expand(self.num_q, -1, -1)  # [Q, B, O + A]
        params = [(w.detach(), b.detach()) if detach_params else (w, b)
                  for w, b in zip(self.weights, self.biases, strict=True)]
        for w, b in params[:-1]:
            x = torch.baddbmm(b, x, w).relu_()  # in place: baddbmm's backward does not read its output
        w, b = params[-1]
        # the one-unit output layer as a dot product: CPU bmm takes ~8x longer at n = 1 (docs/performance.md)
        return (x * w.mT).sum(dim=-1, keepdim=True) + b
