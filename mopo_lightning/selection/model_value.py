"""Model-based value estimate: a policy's episode return, rolled out in the learned dynamics ensemble.

Sources: Zhang et al. 2021, "Autoregressive Dynamics Models for Offline Policy Evaluation and Optimization"
(ICLR; model-based OPE: roll the evaluated policy out in the learned model from the data's initial states to
the task's horizon and average the returns; the same estimates pick policies); TOReL / SOReL (2025: offline
tuning and selection of RL algorithms without the real env, from model rollouts and the ensemble's spread).
The estimate is of the TRUE return: the model's raw reward, summed to the horizon or to the termination.

Modes (``ModelValueConfig.mode``):

- ``mean`` (default) / ``sample``: each member e of ``members`` is a model of its own. From every start s0:
  a_t = pi(s_t), s_{t+1} = s_t + mu_e(s_t, a_t) (``sample``: + sigma_e * eps, seeded generator), r_t = the
  member's reward mean (its noise has mean 0: the same expectation, less variance). All K members step at
  once, state [K, W, O], through the ensemble's per-member ``forward`` on [K, W, in] with its member weights
  sliced to ``members`` once: no loop over members or rows. ``mean`` is the default: MuJoCo is deterministic,
  so a member's learned variance is its own error estimate, not noise of the system; with the mean, member
  e's return is a deterministic function of the member (no replicates needed to repeat it), and the spread
  across members is their disagreement alone (epistemic), which the pessimistic ``return_min`` reads.
- ``elite_sampled``: the training MDP itself (``model_env.env.model_step``: an elite drawn per row per step,
  its Gaussian sample), ``replicates`` copies of every start in one batch; the spread is across replicates.
  With a ``ModelMDP``, its reward mode, termination and lambda * u apply, and the penalised return (MOPO's
  objective: a pessimistic variant) is reported beside the raw one; without one, reward mode ``mean`` and no
  penalty. A per-member penalty is refused: u needs every member at every member's state (K times the cost).

Members: ``elites`` (default). The non-elites are the members with the worst holdout error
(``dynamics/module.py`` keeps the lowest-holdout-MSE members as elites) and the training MDP never steps
with them: with them in, the min over members would mostly measure the worst model, not the policy.
A row's return stops at its terminal transition (counted), as the real env ends the episode; a non-finite
reward stops it uncounted (``diverged``). Horizon: D4RL's 1000-step time limit.

Speed: finished rows are masked, and every ``compact_every`` steps the alive rows move to the front of each
member's batch, which shrinks to the widest member's count (the one host sync; the loop ends at 0), so a
policy that falls fast costs little. Measured (``benchmarks/selection_model_value.py``; AMD EPYC, 1 torch thread,
a shared 2-core machine at load 1.2-3.4): Hopper, 400 starts, 7 x 4 x 200 ensemble (5 elites), SAC's 256 x 256
actor, 1000 steps. No row ever ending: ``mean`` 11-15 s (~12 ms a step, a third of it the actor), ``sample``
the same, ``elite_sampled`` 73 s (5 replicates through all 7 members). Every row ended by step 55: 0.70 s
packing every 10 steps (the default), 0.74 s every step, 11.3 s masked only.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any, Literal, Protocol

import numpy as np
import torch
from torch import Tensor, nn

from mopo_lightning.data.d4rl import D4RL_MAX_EPISODE_STEPS
from mopo_lightning.envs.tasks import Task
from mopo_lightning.envs.termination import TerminationFn
from mopo_lightning.model_env.env import EnsemblePredictor, model_step
from mopo_lightning.model_env.mdp import ModelMDP
from mopo_lightning.selection.fqe import Policy

Mode = Literal["mean", "sample", "elite_sampled"]


@dataclass(frozen=True)
class ModelValueConfig:
    """The model-based estimate's knobs (module docstring)."""

    horizon: int = D4RL_MAX_EPISODE_STEPS
    """Steps per rollout: the real episode's time limit (D4RL's 1000, ``callbacks.evaluation``'s default)."""
    members: Literal["elites", "all"] = "elites"
    """Members rolled out (or drawn from, ``elite_sampled``): the ensemble's elites, in their order, or all."""
    mode: Mode = "mean"
    """``mean``/``sample``: each member its own model (its mean, or its Gaussian sample); ``elite_sampled``: the
    training MDP's random elite per row per step."""
    replicates: int = 5
    """``elite_sampled`` only: copies of every start state, each an independent estimate (the spread)."""
    seed: int = 0
    """Seed of the generator that draws the samples and elites (``mean`` draws nothing)."""
    max_starts: int | None = 1000
    """At most this many start states, evenly spaced in the order given (None: all)."""
    chunk_starts: int | None = None
    """Start states rolled out together (None: all at once); bounds memory for many starts."""
    compact_every: int = 10
    """Steps between packings of the alive rows (each one host sync); 0: mask only, never pack or stop early."""

    def __post_init__(self) -> None:
        if self.horizon < 1 or self.replicates < 1 or self.compact_every < 0:
            raise ValueError(f"ModelValueConfig needs horizon, replicates >= 1 and compact_every >= 0: {self}")
        if (self.max_starts is not None and self.max_starts < 1) or (self.chunk_starts or 1) < 1:
            raise ValueError(f"ModelValueConfig needs positive max_starts and chunk_starts (or None): {self}")
        if self.mode not in ("mean", "sample", "elite_sampled") or self.members not in ("elites", "all"):
            raise ValueError(f"ModelValueConfig: unknown mode {self.mode!r} or members {self.members!r}")


class MemberEnsemble(EnsemblePredictor, Protocol):
    """An ``nn.Module`` ensemble (``dynamics.ensemble.GaussianEnsemble``) as the estimate reads it."""

    num_members: int

    def forward(self, inputs: Tensor) -> tuple[Tensor, Tensor]:
        """Raw [s, a] inputs [E, B, O + A], one batch per member -> (mean [r, s' - s], logvar) [E, B, 1 + O]."""
        ...

    def member_parameters(self) -> list[nn.Parameter]:
        """The parameters with a leading member dimension [E, ...]."""
        ...


@dataclass(frozen=True)
class ModelValueResult:
    """One policy's model-based estimate; ``as_dict()`` is JSON-ready."""

    return_mean: float
    """Mean over ``per_member`` of the mean episode return over the start states."""
    return_std: float
    """Population standard deviation of ``per_member`` (the members' or replicates' spread)."""
    return_min: float
    """Min of ``per_member``: the pessimistic lower bound across members."""
    per_member: tuple[float, ...]
    """Mean return over the start states, per member (per replicate in ``elite_sampled``)."""
    members: tuple[int, ...]
    """Member ids of ``per_member`` (replicate numbers in ``elite_sampled``)."""
    normalized_mean: float | None
    """D4RL normalised score of ``return_mean`` (None without reference scores)."""
    normalized_std: float | None
    """``return_std`` in normalised-score units."""
    normalized_min: float | None
    """D4RL normalised score of ``return_min``."""
    penalized_mean: float | None
    """``elite_sampled`` with a ``ModelMDP``: mean of the returns of r - lambda * u (else None)."""
    penalized_min: float | None
    """Min over replicates of the penalised return."""
    episode_steps: float
    """Mean steps counted per rollout (the horizon when nothing terminates)."""
    diverged: float
    """Fraction of rollouts stopped by a non-finite reward."""
    horizon: int
    """Steps per rollout."""
    starts: int
    """Start states rolled out."""
    mode: str
    """``ModelValueConfig.mode``."""

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


Step = Callable[[Tensor, Tensor], tuple[Tensor, Tensor, Tensor | None, Tensor]]
"""(obs [K, W, O], action [K, W, A]) -> (next_obs [K, W, O], reward [K, W], penalised reward [K, W] | None,
terminated [K, W])."""


def member_step(ensemble: MemberEnsemble, members: Tensor, termination_fn: TerminationFn, mode: Mode,
                generator: torch.Generator) -> Step:
    """Each of ``members`` [K] steps its own rows: the ensemble's forward, member weights sliced once."""
    sliced = {id(p) for p in ensemble.member_parameters()}
    params = {name: p[members] for name, p in ensemble.named_parameters() if id(p) in sliced}  # [K, ...]

    def step(obs: Tensor, action: Tensor) -> tuple[Tensor, Tensor, None, Tensor]:
        mean, logvar = torch.func.functional_call(ensemble, params, (torch.cat([obs, action], dim=-1),))
        delta = mean[..., 1:]  # [K, W, O]
        if mode == "sample":
            eps = torch.randn(delta.shape, generator=generator, device=delta.device, dtype=delta.dtype)
            delta = delta + eps * (0.5 * logvar[..., 1:]).exp()
        next_obs = obs + delta
        return next_obs, mean[..., 0], None, termination_fn(obs, action, next_obs).reshape(obs.shape[:-1])

    return step


class _Drawn:
    """``ensemble`` with ``members`` as the elites ``model_step`` draws from."""

    def __init__(self, ensemble: EnsemblePredictor, members: Tensor) -> None:
        self.predict, self.elites = ensemble.predict, members


def elite_step(ensemble: EnsemblePredictor, mdp: ModelMDP, penalized: bool, generator: torch.Generator) -> Step:
    """``model_step`` of ``mdp`` on the flattened rows (the training MDP's random elite per row per step)."""

    def step(obs: Tensor, action: Tensor) -> tuple[Tensor, Tensor, Tensor | None, Tensor]:
        k, w, o = obs.shape
        nxt = model_step(ensemble, obs.reshape(k * w, o), action.reshape(k * w, -1), mdp, generator)
        penalty = nxt["reward"].view(k, w) if penalized else None
        next_obs, terminated = nxt["observation"].view(k, w, o), nxt["terminated"].view(k, w)
        return next_obs, nxt["raw_reward"].view(k, w), penalty, terminated

    return step


@torch.no_grad()
def rollout_returns(step: Step, policy: Policy, obs: Tensor, horizon: int,
                    compact_every: int) -> dict[str, Tensor]:
    """Returns of ``policy`` from obs [K, B, O] through ``step`` for ``horizon`` steps or to termination.

    Slots [K, W] hold rows; ``slot`` maps each to its row b, where its reward is added. Every ``compact_every``
    steps the alive slots move to the front and the width shrinks to the widest member's alive count.
    Returns per row [K, B]: ``raw`` and ``penalized`` (float64; ``penalized`` only if the step gives it),
    ``steps`` (counted transitions, the terminal one included), ``diverged`` (stopped by a non-finite reward).
    """
    k, b, o = obs.shape
    slot = torch.arange(b, device=obs.device).expand(k, b).contiguous()  # [K, W] -> row
    alive = torch.ones(k, b, dtype=torch.bool, device=obs.device)  # [K, W]
    out = {"raw": obs.new_zeros(k, b, dtype=torch.float64), "steps": slot.new_zeros(k, b),
           "diverged": slot.new_zeros(k, b)}
    for t in range(horizon):
        if compact_every and t and t % compact_every == 0:
            width = int(alive.sum(dim=1).max())  # the one host sync
            if width == 0:
                break
            if width < alive.shape[1]:
                keep = torch.argsort((~alive).to(torch.uint8), dim=1, stable=True)[:, :width]  # alive first
                obs = obs.gather(1, keep[..., None].expand(k, width, o))
                slot, alive = slot.gather(1, keep), alive.gather(1, keep)
        w = obs.shape[1]
        action = policy(obs.reshape(k * w, o)).reshape(k, w, -1)
        next_obs, reward, penalized, terminated = step(obs, action)
        finite = reward.isfinite() if penalized is None else reward.isfinite() & penalized.isfinite()
        counted = alive & finite
        out["raw"].scatter_add_(1, slot, torch.where(counted, reward.double(), 0.0))
        if penalized is not None:
            out.setdefault("penalized", torch.zeros_like(out["raw"]))
            out["penalized"].scatter_add_(1, slot, torch.where(counted, penalized.double(), 0.0))
        out["steps"].scatter_add_(1, slot, counted.long())
        out["diverged"].scatter_add_(1, slot, (alive & ~finite).long())
        alive = counted & ~terminated
        obs = torch.where(alive[..., None], next_obs, obs)  # finished rows keep their last state
    return out


@torch.no_grad()
def model_value(ensemble: MemberEnsemble, policy: Policy, starts: Tensor, task: Task,
                config: ModelValueConfig = ModelValueConfig(), mdp: ModelMDP | None = None) -> ModelValueResult:
    """The model-based estimate of ``policy``'s episode return from ``starts`` [S, O] (module docstring).

    ``policy``: obs [N, O] -> action [N, A], deterministic (``lambda o: sac.act(o, True)``); ``task``: the
    termination and the score; ``mdp``: the training ``ModelMDP``, for ``elite_sampled`` only (its penalty
    gives ``penalized_*``). Runs on the ensemble's device.
    """
    device = ensemble.elites.device
    every = torch.arange(ensemble.num_members, device=device)
    members = (ensemble.elites if config.members == "elites" else every).to(device)  # [K]
    if starts.shape[0] == 0:
        raise ValueError("no start states to roll out from")
    if config.max_starts is not None and starts.shape[0] > config.max_starts:
        starts = starts[torch.linspace(0, starts.shape[0] - 1, config.max_starts).round().long()]
    starts = starts.to(device, torch.float32)
    generator = torch.Generator(device=device).manual_seed(config.seed)
    if config.mode == "elite_sampled":
        penalized = mdp is not None
        mdp = mdp or ModelMDP(task.termination_fn, penalty_coef_raw=0.0, reward_mode="mean")
        step, copies = elite_step(_Drawn(ensemble, members), mdp, penalized, generator), config.replicates
    else:
        if mdp is not None:
            raise ValueError("a ModelMDP (its penalty) needs mode='elite_sampled': a per-member penalty would "
                             "predict every member at every member's state (K times the cost)")
        step, copies = member_step(ensemble, members, task.termination_fn, config.mode, generator), len(members)
    chunk = config.chunk_starts or starts.shape[0]
    parts = []
    for rows in starts.split(chunk):  # chunks of start states, one rollout each
        # elite_sampled: one group [1, R * B, O] of replicates x rows (row r * B + b is replicate r); else [K, B, O]
        obs = rows.repeat(copies, 1)[None] if config.mode == "elite_sampled" else rows.expand(copies, *rows.shape)
        out = rollout_returns(step, policy, obs, config.horizon, config.compact_every)
        parts.append({key: v.reshape(copies, rows.shape[0]) for key, v in out.items()})  # [K, B] each
    out = {key: torch.cat([p[key] for p in parts], dim=1) for key in parts[0]}  # [K, S] each
    return _result(out, members, task, config, starts.shape[0])


def _result(out: dict[str, Tensor], members: Tensor, task: Task, config: ModelValueConfig,
            starts: int) -> ModelValueResult:
    per = out["raw"].mean(dim=1).cpu().numpy()  # [K]
    ids = range(len(per)) if config.mode == "elite_sampled" else members.tolist()
    score = task.normalized_score(per) if task.has_reference_scores else None
    pen = out["penalized"].mean(dim=1).cpu().numpy() if "penalized" in out else None
    return ModelValueResult(
        return_mean=float(per.mean()),
        return_std=float(per.std()),
        return_min=float(per.min()),
        per_member=tuple(float(v) for v in per),
        members=tuple(int(i) for i in ids),
        normalized_mean=None if score is None else float(np.mean(score)),
        normalized_std=None if score is None else float(np.std(score)),
        normalized_min=None if score is None else float(np.min(score)),
        penalized_mean=None if pen is None else float(pen.mean()),
        penalized_min=None if pen is None else float(pen.min()),
        episode_steps=float(out["steps"].double().mean()),
        diverged=float((out["diverged"] > 0).double().mean()),
        horizon=config.horizon,
        starts=starts,
        mode=config.mode,
    )
