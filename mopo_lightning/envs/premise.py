"""MOPO's premise, measured on real transitions: does the penalty u(s, a) track the model's true error?

MOPO (Yu et al. 2020, arXiv 2005.13239, section 4, assumption 4.3) asks for an admissible error estimator:
the model's error at (s, a) is at most u(s, a), so the penalised model return lower-bounds the real one.
Given real transitions (an evaluation's episodes), these pure functions measure how far that holds where
the current policy goes. Pure tensor code: no Lightning, no gymnasium.

Rows measured: at most ``max_rows`` (default ``MAX_ROWS``) of the N recorded transitions, evenly spaced
(all of them when N is smaller). Definitions, per measured row:

- target y = [r, s' - s] (the ensemble's output; comparing [r, s'] with s added to both is the same).
- model_error = || mean over elites of mu_i(s, a) - y ||_2 over all 1 + O columns; ``model_error_mse``
  is the mean square over the same columns.
- nll = -log( 1/K sum over the K elites of N(y; mu_i, diag sigma_i^2) ): the elites' equal-weight Gaussian
  mixture, full constants, in nats per transition (summed over the 1 + O columns).
- u = ``uncertainty_penalty`` of the model env, over ALL members, for each kind:
  aleatoric max_i ||sigma_i||_2 (all 1 + O columns), disagreement max_i ||mu_i[s'] - mean_j mu_j[s']||_2.
- the bound violated: error_kind > u_kind, with error_kind the elite-mean error norm over the columns
  u covers (aleatoric: all 1 + O columns, i.e. model_error; disagreement: the O next-state columns).
  No lambda: the bound is the estimator's, the coefficient is the policy stage's choice.
- spearman: rank correlation of u_kind and error_kind over the rows (average ranks for ties).

H-step branched returns (what MOPO's rollouts of length h = H actually use):

- start states: the measured rows s_t with a full real window after them (t + H <= T, T the episode's
  length) or whose episode terminated (its last row ``terminated``): those keep a window cut at the
  termination. Rows of episodes cut by the time limit less than H steps later are left out. At most
  ``max_start_states`` (default ``MAX_START_STATES``) of them, evenly spaced.
- real = sum_{k < min(H, T - t)} r_{t+k} of the recorded episode (per-episode cumulative sums, no loop):
  the deterministic evaluation policy's H-step return from s_t in the real env, or its return up to the
  real termination inside the window.
- model: from every start state at once, the same policy through ``model_step`` for H steps (H batched
  calls; the first step takes the recorded action a_t, which the same deterministic policy chose at s_t,
  and reuses the one-step prediction). ``model_step`` as the policy stage runs it: the configured reward
  mode, the sampled elite's next state, the task's termination function, a fixed-seed generator. A row
  stops at the model's termination (that step counted). raw = sum of the model's rewards;
  penalized_kind = sum of (reward - lambda * u_kind) along the same trajectory, for both kinds.
- return_gap = mean(penalized - real) (MOPO's bound wants <= 0); return_gap_raw = mean(raw - real);
  penalized_below_real = fraction of start states with penalized <= real (the lower bound holding).
- A row whose model reward or penalty turns non-finite stops there, that step not counted
  (``model_diverged``: the fraction of start states).

distance_to_data: Euclidean distance, in dataset-std units per observation dimension, from each real
state s to its nearest neighbour among at most ``MAX_DATA_STATES`` dataset observations (a uniform
subsample without replacement, fixed seed, when the dataset is larger), measured for at most
``MAX_QUERY_STATES`` of the measured rows (evenly spaced).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from tensordict import TensorDictBase
from torch import Tensor

from mopo_lightning.envs.model_env import (
    EnsemblePredictor,
    PenaltyKind,
    RewardMode,
    model_step,
    uncertainty_penalty,
)
from mopo_lightning.envs.termination import TerminationFn
from mopo_lightning.transitions import ACTION, NEXT_OBSERVATION, OBSERVATION, REWARD, TERMINATED

PENALTY_KINDS: tuple[PenaltyKind, ...] = ("aleatoric", "disagreement")
MAX_ROWS = 2_000
"""Recorded transitions measured (evenly spaced above this): the one-step figures' cost bound."""
MAX_START_STATES = 1_000
"""Start states of the H-step model rollouts (evenly spaced above this): H batched ensemble calls on them."""
MAX_DATA_STATES = 50_000
"""Dataset observations the nearest-neighbour distance searches (a fixed-seed subsample above this)."""
MAX_QUERY_STATES = 500
"""Measured rows whose distance is measured (evenly spaced above this): the search's cost bound."""
EPISODE, STEP = "episode", "step"
"""Extra keys of recorded evaluation transitions (``callbacks.evaluation``): episode id, step in the episode."""

ActFn = Callable[[Tensor], Tensor]
"""Batched deterministic policy: observation [B, O] -> action [B, A]."""


@dataclass(frozen=True)
class PenaltySettings:
    """The penalised model MDP as the policy stage configures it."""

    coef: float
    """lambda of r - lambda * u."""
    kind: PenaltyKind = "aleatoric"
    """The penalty that trains (both kinds are measured)."""
    reward_mode: RewardMode = "sample"
    """The model reward: the chosen elite's sample (authors' code) or its mean (paper)."""


@dataclass
class DataReference:
    """Standardised dataset observations to measure distances against: states [M, O], mean, std [O]."""

    states: Tensor
    mean: Tensor
    std: Tensor

    @classmethod
    def from_observations(cls, observations: Tensor, max_states: int = MAX_DATA_STATES,
                          seed: int = 0) -> DataReference:
        """Standardise with the whole dataset's mean and std (std < 1e-12 -> 1); keep a subsample."""
        obs = observations.float()
        mean, std = obs.mean(0), obs.std(0, unbiased=False)
        std = torch.where(std < 1e-12, torch.ones_like(std), std)
        if obs.shape[0] > max_states:
            pick = torch.randperm(obs.shape[0], generator=torch.Generator().manual_seed(seed))[:max_states]
            obs = obs[pick]
        return cls((obs - mean) / std, mean, std)


@dataclass
class Premise:
    """``scalars``: the figures (keys as logged under ``premise/``); ``rows``: per-row tensors.

    ``rows``: one-step tensors [n] over the measured rows (``row``: their index in the transitions);
    ``return/...`` tensors [B] over the start states (``return/start``: their index among the measured
    rows; ``return/real``, ``return/raw``, ``return/<kind>/penalized``, ``return/steps``); and
    ``distance_to_data`` [q] for the rows ``distance_row`` (index among the measured rows).
    """

    scalars: dict[str, float]
    rows: dict[str, Tensor]


def evenly_spaced(n: int, most: int, device: torch.device | str = "cpu") -> Tensor:
    """``min(n, most)`` indices spread evenly over range(n), first and last included: [m] long."""
    return torch.linspace(0, max(n - 1, 0), min(n, most), device=device).round().long()


def _ranks(x: Tensor) -> Tensor:
    """Average ranks (ties share the mean of their positions), 1-based: x [N] -> [N] float64."""
    _, inverse, counts = torch.unique(x, return_inverse=True, return_counts=True)
    ends = counts.cumsum(0).double()
    return (ends - (counts.double() - 1) / 2)[inverse]


def spearman(x: Tensor, y: Tensor) -> Tensor:
    """Spearman rank correlation (average ranks for ties, as scipy) along the last dim: [..., N] -> [...].

    NaN where N < 2 or either input is constant. Ranks are sorts of whole rows; only the leading batch
    dims (e.g. the two penalty kinds) are looped over.
    """
    flat_x, flat_y = x.reshape(-1, x.shape[-1]), y.reshape(-1, y.shape[-1])
    rx = torch.stack([_ranks(r) for r in flat_x]) if flat_x.numel() else flat_x.double()
    ry = torch.stack([_ranks(r) for r in flat_y]) if flat_y.numel() else flat_y.double()
    rx, ry = rx - rx.mean(-1, keepdim=True), ry - ry.mean(-1, keepdim=True)
    denom = rx.norm(dim=-1) * ry.norm(dim=-1)
    rho = (rx * ry).sum(-1) / denom
    return torch.where(denom > 0, rho, torch.full_like(rho, math.nan)).reshape(x.shape[:-1])


def one_step(ensemble: EnsemblePredictor, obs: Tensor, action: Tensor, reward: Tensor, next_obs: Tensor,
             prediction: tuple[Tensor, Tensor] | None = None) -> dict[str, Tensor]:
    """Per-row model error, NLL and both penalties on real transitions (module docstring); each [N].

    ``prediction``: ``ensemble.predict(obs, action)`` when the caller already has it.
    """
    mean, std = prediction if prediction is not None else ensemble.predict(obs, action)  # [E, N, 1 + O]
    target = torch.cat([reward.reshape(-1, 1), next_obs], dim=-1).to(mean.dtype)  # [N, 1 + O]
    elites = ensemble.elites.to(mean.device)
    mu, sigma = mean[elites], std[elites]  # [K, N, 1 + O]
    diff = mu.mean(0) - target  # [N, 1 + O]
    z = (target - mu) / sigma
    log_prob = -0.5 * (z.square() + math.log(2 * math.pi)).sum(-1) - sigma.log().sum(-1)  # [K, N]
    nll = -(torch.logsumexp(log_prob, dim=0) - math.log(elites.numel()))
    out = {
        "model_error": diff.norm(dim=-1),
        "model_error_mse": diff.square().mean(-1),
        "model_error_state": diff[:, 1:].norm(dim=-1),
        "reward_error": diff[:, 0].abs(),
        "nll": nll,
    }
    for kind in PENALTY_KINDS:
        out[f"{kind}/penalty"] = uncertainty_penalty(mean, std, kind)
        out[f"{kind}/error"] = out["model_error"] if kind == "aleatoric" else out["model_error_state"]
    return out


class _Recorder:
    """An ``EnsemblePredictor`` that keeps its last prediction, so both penalties come from one call;
    ``primed``: a prediction to hand out once instead of calling the ensemble (the first rollout step)."""

    def __init__(self, ensemble: EnsemblePredictor, primed: tuple[Tensor, Tensor] | None = None) -> None:
        self.ensemble, self.elites = ensemble, ensemble.elites
        self.primed = primed
        self.last: tuple[Tensor, Tensor] | None = None

    def predict(self, obs: Tensor, action: Tensor) -> tuple[Tensor, Tensor]:
        self.last, self.primed = (self.primed or self.ensemble.predict(obs, action)), None
        return self.last


@torch.no_grad()
def branched_returns(ensemble: EnsemblePredictor, start_obs: Tensor, horizon: int, policy: ActFn, *,
                     termination_fn: TerminationFn, settings: PenaltySettings,
                     generator: torch.Generator | None = None, first_action: Tensor | None = None,
                     first_prediction: tuple[Tensor, Tensor] | None = None) -> dict[str, Tensor]:
    """Roll ``policy`` through the model from start_obs [B, O] for ``horizon`` steps, or to termination.

    One batched ``model_step`` per step over the rows still running; never a loop over rows.
    ``first_action`` [B, A]: the first step's action instead of ``policy(start_obs)`` (the recorded one);
    ``first_prediction``: ``ensemble.predict(start_obs, first_action)`` when the caller has it.
    Returns per row [B]: ``raw`` (sum of model rewards), ``penalized/<kind>`` (sum of reward - lambda u_kind
    along the same trajectory, both kinds), ``steps`` (model steps counted; the terminating step counts)
    and ``diverged`` (a non-finite reward or penalty: the row stops there, that step not counted).
    """
    recorder = _Recorder(ensemble, first_prediction)
    b, device = start_obs.shape[0], start_obs.device
    obs = start_obs.clone()
    raw = torch.zeros(b, device=device, dtype=torch.float64)
    penalty = {kind: torch.zeros_like(raw) for kind in PENALTY_KINDS}
    taken = torch.zeros(b, dtype=torch.long, device=device)
    diverged = torch.zeros(b, dtype=torch.bool, device=device)
    alive = torch.ones(b, dtype=torch.bool, device=device)
    for step in range(horizon if b else 0):
        rows = alive.nonzero().squeeze(-1)
        if rows.numel() == 0:
            break
        action = first_action[rows] if step == 0 and first_action is not None else policy(obs[rows])
        nxt = model_step(recorder, obs[rows], action, termination_fn=termination_fn, penalty_coef=settings.coef,
                         generator=generator, penalty_kind=settings.kind, reward_mode=settings.reward_mode)
        reward = nxt["raw_reward"].reshape(-1).double()
        u = {kind: uncertainty_penalty(*recorder.last, kind).double() for kind in PENALTY_KINDS}
        finite = reward.isfinite() & torch.stack([v.isfinite() for v in u.values()]).all(0)
        diverged[rows] |= ~finite  # a blown-up model step ends the row and adds nothing
        raw[rows] += torch.where(finite, reward, 0.0)
        for kind in PENALTY_KINDS:
            penalty[kind][rows] += torch.where(finite, u[kind], 0.0)
        taken[rows] += finite.long()
        obs[rows] = nxt["observation"]
        alive[rows] = finite & ~nxt["terminated"].reshape(-1)
    out = {"raw": raw, "steps": taken, "diverged": diverged}
    out.update({f"penalized/{kind}": raw - settings.coef * penalty[kind] for kind in PENALTY_KINDS})
    return out


def real_windows(transitions: TensorDictBase, horizon: int) -> dict[str, Tensor]:
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
    steps = remaining.clamp_max(horizon)
    cumulative = torch.cat([torch.zeros(1, dtype=torch.float64, device=device),
                            transitions[REWARD].reshape(-1).double().cumsum(0)])
    rows = torch.arange(n, device=device)
    return {"eligible": (remaining >= horizon) | terminated, "steps": steps,
            "real": cumulative[rows + steps] - cumulative[rows]}


def distance_to_data(states: Tensor, reference: DataReference, chunk: int = 256) -> Tensor:
    """Nearest-neighbour distance in dataset-std units: states [N, O] -> [N].

    The neighbour is found with ||x||^2 - 2 x.r + ||r||^2 (one matmul per chunk of rows); its distance is
    then recomputed exactly as ||x - r||_2 (no cancellation error near 0).
    """
    ref = reference.states.to(states.device)
    x = (states.float() - reference.mean.to(states.device)) / reference.std.to(states.device)
    ref_sq = ref.square().sum(-1)
    nearest = torch.cat([torch.addmm(ref_sq, x[i:i + chunk], ref.T, alpha=-2).argmin(-1)
                         for i in range(0, x.shape[0], chunk)]) if x.shape[0] else x.new_zeros(0).long()
    return (x - ref[nearest]).norm(dim=-1)


@torch.no_grad()
def premise_metrics(ensemble: EnsemblePredictor, transitions: TensorDictBase, *, termination_fn: TerminationFn,
                    settings: PenaltySettings, policy: ActFn, horizon: int, reference: DataReference | None = None,
                    seed: int = 0, max_rows: int = MAX_ROWS,
                    max_start_states: int = MAX_START_STATES) -> Premise:
    """The premise figures of one evaluation (module docstring).

    ``transitions`` [N]: real transitions with the transition keys plus ``episode`` and ``step`` (long),
    ordered by episode then step, as ``evaluate_policy(record=True)`` returns them. ``horizon``: H of the
    branched model returns (the run's rollout length). Scalars are means over the measured rows (one-step
    figures) or over the start states (H-step returns); the configured kind's figures also appear without
    the kind prefix.
    """
    if horizon < 1:
        raise ValueError(f"premise: the horizon must be >= 1, got {horizon}")
    device = ensemble.elites.device
    td = transitions.to(device)
    windows = real_windows(td, horizon)
    measured = evenly_spaced(td.shape[0], max_rows, device)
    obs, action = td[OBSERVATION][measured], td[ACTION][measured]
    prediction = ensemble.predict(obs, action)
    rows = one_step(ensemble, obs, action, td[REWARD][measured], td[NEXT_OBSERVATION][measured], prediction)
    rows["row"] = measured
    scalars: dict[str, float] = {
        "transitions": float(td.shape[0]),
        "rows_measured": float(measured.numel()),
        "model_error_mean": float(rows["model_error"].mean()),
        "model_error_mse": float(rows["model_error_mse"].mean()),
        "reward_error_mean": float(rows["reward_error"].mean()),
        "nll": float(rows["nll"].mean()),
    }
    for kind in PENALTY_KINDS:
        u, err = rows[f"{kind}/penalty"], rows[f"{kind}/error"]
        rows[f"{kind}/violated"] = err > u
        scalars[f"{kind}/spearman"] = float(spearman(u, err))
        scalars[f"{kind}/violation_rate"] = float(rows[f"{kind}/violated"].double().mean())
        scalars[f"{kind}/penalty_mean"] = float(u.mean())

    # H-step branched returns from the measured rows that have a real window
    candidates = windows["eligible"][measured].nonzero().squeeze(-1)
    start = candidates[evenly_spaced(candidates.numel(), max_start_states, device)]  # among measured rows
    gen = torch.Generator(device=device).manual_seed(seed)
    model = branched_returns(ensemble, obs[start], horizon, policy, termination_fn=termination_fn, settings=settings,
                             generator=gen, first_action=action[start],
                             first_prediction=(prediction[0][:, start], prediction[1][:, start]))
    real = windows["real"][measured[start]]
    rows.update({"return/start": start, "return/real": real, "return/raw": model["raw"],
                 "return/steps": model["steps"]})
    scalars.update({
        "horizon": float(horizon),
        "start_states": float(start.numel()),
        "real_return": float(real.mean()),
        "model_return_raw": float(model["raw"].mean()),
        "return_gap_raw": float((model["raw"] - real).mean()),
        "real_steps": float(windows["steps"][measured[start]].double().mean()),
        "model_steps": float(model["steps"].double().mean()),
        "model_diverged": float(model["diverged"].double().mean()),
    })
    for kind in PENALTY_KINDS:
        penalized = model[f"penalized/{kind}"]
        rows[f"return/{kind}/penalized"] = penalized
        scalars[f"{kind}/model_return_penalized"] = float(penalized.mean())
        scalars[f"{kind}/return_gap"] = float((penalized - real).mean())
        scalars[f"{kind}/penalized_below_real"] = float((penalized <= real).double().mean())
    for name in ("spearman", "violation_rate", "penalty_mean", "model_return_penalized", "return_gap",
                 "penalized_below_real"):
        scalars[name] = scalars[f"{settings.kind}/{name}"]

    if reference is not None:
        query = evenly_spaced(obs.shape[0], MAX_QUERY_STATES, device)
        dist = distance_to_data(obs[query], reference)
        rows["distance_to_data"], rows["distance_row"] = dist, query
        scalars["distance_to_data"] = float(dist.mean())
        scalars["distance_to_data_p90"] = float(dist.quantile(0.9)) if dist.numel() else math.nan
    return Premise(scalars, {k: v.detach().cpu() for k, v in rows.items()})
