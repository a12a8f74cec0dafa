"""H-step branched returns: the model's return of a policy from real visited states, beside the real one.

Part of MOPO's premise (``diagnostics/premise.py``): the penalised model return should lower-bound the real return
(Yu et al. 2020, arXiv 2005.13239, section 4). Pure tensor code: no Lightning, no gymnasium.

What MOPO's rollouts of length h = H actually use:

- start states: the measured rows s_t with a full real window after them (t + H <= T, T the episode's
  length) or whose episode terminated (its last row ``terminated``): those keep a window cut at the
  termination. Rows of episodes cut by the time limit less than H steps later are left out. At most
  ``max_start_states`` (default ``premise.MAX_START_STATES``) of them, evenly spaced.
- real = sum_{k < min(H, T - t)} r_{t+k} of the recorded episode (per-episode cumulative sums, no loop):
  the deterministic evaluation policy's H-step return from s_t in the real env, or its return up to the
  real termination inside the window.
- model: from every start state at once, the same policy through ``model_step`` for H steps (H batched
  calls; the first step takes the recorded action a_t, which the same deterministic policy chose at s_t,
  and reuses the one-step prediction). ``model_step`` of the run's ``ModelMDP``, as the policy stage runs it
  (its reward mode, the sampled elite's next state, the task's termination function), a fixed-seed generator. A row
  stops at the model's termination (that step counted). raw = sum of the model's rewards;
  penalized_kind = sum of (reward - lambda_kind * u_kind) along the same trajectory, for every kind
  (lambda_kind: ``ModelMDP.penalty_coef_raw_for``, the same lambda in the run's penalty units).
- return_gap = mean(penalized - real) (MOPO's bound wants <= 0); return_gap_raw = mean(raw - real);
  penalized_below_real = fraction of start states with penalized <= real (the lower bound holding).
- A row whose model reward or trained penalty turns non-finite stops there, that step not counted
  (``model_diverged``: the fraction of start states); a measured kind's non-finite u makes its sum NaN.

The loop calls ``model_step`` itself rather than ``model_env.rollouts.branched_rollout``: it needs every
kind's u from the one prediction, the recorded first action, the divergence stop, the caller's generator and
a deterministic policy on the running rows only, where the policy stage samples its policy on every row.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from tensordict import TensorDictBase
from torch import Tensor

from mopo_lightning.model_env.env import EnsemblePredictor, model_step
from mopo_lightning.model_env.mdp import ModelMDP
from mopo_lightning.model_env.penalties import PENALTY_KINDS, uncertainty_penalty
from mopo_lightning.transitions import REWARD, TERMINATED

EPISODE, STEP = "episode", "step"
"""Extra keys of recorded evaluation transitions (``callbacks.evaluation``): episode id, step in the episode."""

ActFn = Callable[[Tensor], Tensor]
"""Batched deterministic policy: observation [B, O] -> action [B, A]."""


class _Recorder:
    """An ``EnsemblePredictor`` that keeps its last prediction, so every penalty comes from one call;
    ``primed``: a prediction to hand out once instead of calling the ensemble (the first rollout step)."""

    def __init__(self, ensemble: EnsemblePredictor, primed: tuple[Tensor, Tensor] | None = None) -> None:
        self.ensemble, self.elites = ensemble, ensemble.elites
        self.primed = primed
        self.last: tuple[Tensor, Tensor] | None = None

    def predict(self, obs: Tensor, action: Tensor) -> tuple[Tensor, Tensor]:
        self.last, self.primed = (self.primed or self.ensemble.predict(obs, action)), None
        return self.last


@torch.no_grad()
def branched_returns(ensemble: EnsemblePredictor, start_obs: Tensor, rollout_length: int, policy: ActFn, *,
                     mdp: ModelMDP, generator: torch.Generator | None = None, first_action: Tensor | None = None,
                     first_prediction: tuple[Tensor, Tensor] | None = None,
                     kinds: Sequence[str] = PENALTY_KINDS) -> dict[str, Tensor]:
    """Roll ``policy`` through ``mdp`` from start_obs [B, O] for ``rollout_length`` steps, or to termination.

    One batched ``model_step`` per step over the rows still running; never a loop over rows.
    ``first_action`` [B, A]: the first step's action instead of ``policy(start_obs)`` (the recorded one);
    ``first_prediction``: ``ensemble.predict(start_obs, first_action)`` when the caller has it.
    Returns per row [B]: ``raw`` (sum of model rewards), ``penalized/<kind>`` (sum of reward - lambda_kind
    u_kind along the same trajectory, for the trained kind and ``kinds``), ``steps`` (model steps counted; the
    terminating step counts) and ``diverged`` (a non-finite reward or trained penalty: the row stops there,
    that step not counted).
    """
    kinds = list(dict.fromkeys([mdp.penalty_kind, *kinds]))
    recorder = _Recorder(ensemble, first_prediction)
    b, device = start_obs.shape[0], start_obs.device
    obs = start_obs.clone()
    raw = torch.zeros(b, device=device, dtype=torch.float64)
    penalty = {kind: torch.zeros_like(raw) for kind in kinds}
    taken = torch.zeros(b, dtype=torch.long, device=device)
    diverged = torch.zeros(b, dtype=torch.bool, device=device)
    alive = torch.ones(b, dtype=torch.bool, device=device)
    for step in range(rollout_length if b else 0):
        rows = alive.nonzero().squeeze(-1)
        if rows.numel() == 0:
            break
        action = first_action[rows] if step == 0 and first_action is not None else policy(obs[rows])
        nxt = model_step(recorder, obs[rows], action, mdp, generator)
        reward = nxt["raw_reward"].reshape(-1).double()
        point = torch.cat([nxt["raw_reward"], nxt["observation"]], dim=-1)  # the transition model_step made
        u = {kind: uncertainty_penalty(*recorder.last, kind, point, recorder.elites).double() for kind in kinds}
        finite = reward.isfinite() & u[mdp.penalty_kind].isfinite()
        diverged[rows] |= ~finite  # a blown-up model step ends the row and adds nothing
        raw[rows] += torch.where(finite, reward, 0.0)
        for kind in kinds:
            penalty[kind][rows] += torch.where(finite, u[kind], 0.0)
        taken[rows] += finite.long()
        obs[rows] = nxt["observation"]
        alive[rows] = finite & ~nxt["terminated"].reshape(-1)
    out = {"raw": raw, "steps": taken, "diverged": diverged}
    out.update({f"penalized/{kind}": raw - mdp.penalty_coef_raw_for(kind) * penalty[kind] for kind in kinds})
    return out


def real_windows(transitions: TensorDictBase, rollout_length: int) -> dict[str, Tensor]:
    """The real H-step windows of recorded episodes, vectorised (module docstring); each [N].

    ``transitions`` [N] ordered by episode, then step, each episode's steps 0..T-1 (as
    ``evaluate_policy(record=True)`` returns them). Returns ``eligible`` (bool: a full window, or the
    episode terminated), ``steps`` (min(H, T - t)) and ``real`` (float64: the window's reward sum).
    """
    episode, step = transitions[EPISODE].reshape(-1), transitions[STEP].reshape(-1)
    n, device = episode.shape[0], episode.device
    if n == 0:
        empty = torch.zeros(0, device=device)
        return {"eligible": empty.bool(), "steps": empty.long(), "real": empty.double()}
    _, index, lengths = torch.unique_consecutive(episode, return_inverse=True, return_counts=True)
    first = lengths.cumsum(0) - lengths  # each episode's first row
    if not torch.equal(step, torch.arange(n, device=device) - first[index]):
        raise ValueError("premise: transitions must be ordered by episode, then step, each from step 0")
    last = lengths.cumsum(0) - 1
    terminated = transitions[TERMINATED].reshape(-1)[last][index]  # the episode ended by termination
    remaining = lengths[index] - step
    steps = remaining.clamp_max(rollout_length)
    cumulative = torch.cat([torch.zeros(1, dtype=torch.float64, device=device),
                            transitions[REWARD].reshape(-1).double().cumsum(0)])
    rows = torch.arange(n, device=device)
    return {"eligible": (remaining >= rollout_length) | terminated, "steps": steps,
            "real": cumulative[rows + steps] - cumulative[rows]}
