"""MOPO's premise, measured on real transitions: does the penalty u(s, a) track the model's true error?

MOPO (Yu et al. 2020, arXiv 2005.13239, section 4, assumption 4.3) asks for an admissible error estimator:
the model's error at (s, a) is at most u(s, a), so the penalised model return lower-bounds the real one.
Given real transitions (an evaluation's episodes), these pure functions measure how far that holds where
the current policy goes. Pure tensor code: no Lightning, no gymnasium. Every figure is defined once, in
``DEFINITIONS`` (``callbacks.premise`` shows it in TensorBoard).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from tensordict import TensorDictBase
from torch import Tensor

from mopo_lightning.diagnostics.branched_returns import (
    EPISODE,
    STEP,
    ActFn,
    branched_returns,
    real_windows,
)
from mopo_lightning.model_env.env import EnsemblePredictor, produced_transition
from mopo_lightning.model_env.mdp import ModelMDP
from mopo_lightning.model_env.penalties import PENALTIES, PENALTY_KINDS, uncertainty_penalty
from mopo_lightning.model_env.settings import RewardMode
from mopo_lightning.transitions import ACTION, NEXT_OBSERVATION, OBSERVATION, REWARD

__all__ = ["DEFINITIONS", "EPISODE", "PENALTY_KINDS", "STEP", "ActFn", "DataReference", "Premise",
           "branched_returns", "premise_metrics", "real_windows"]
DEFINITIONS = """\
Rows: at most max_rows of an evaluation's recorded real transitions, evenly spaced (rows_measured); per
row the target y = [r, s' - s] (the ensemble's output) and m, the elites' mean prediction.
- model_error_mean: mean of ||m - y||_2 over all 1 + O columns; model_error_mse: mean square;
  reward_error_mean: mean |m_r - r|.
- nll: -log of the elites' equal-weight Gaussian mixture density of y (full constants), nats per transition.
- <kind>/penalty_mean: u(s, a) as the model env computes it (no lambda), for every kind of
  model_env/penalties.py whichever trains; llv's point: the next state a model step would produce there
  (fixed-seed draw); loo_kl: the elites, each against the other members, averaged.
- <kind>/violation_rate: fraction of rows with error > u (elite-mean error over the columns u reads: all
  1 + O for aleatoric and loo_kl, the O next-state ones for the others). The bound MOPO assumes; only in
  the error's units for aleatoric, disagreement, max_pairwise_diff and ensemble_std (ensemble_var, llv,
  loo_kl: squared units or nats, so only their spearman means something).
- <kind>/spearman: rank correlation of u and that error (average ranks for ties; units do not matter).
H-step branched returns, H = rollout_length (the run's rollout length unless set), from start_states visited
states s_t (at most max_start_states, evenly spaced) that have H real steps after them, or whose episode
terminated within H steps (then the real window stops at the termination):
- real_return: mean of sum_{k<H} r_{t+k} of the recorded episode.
- model_return_raw: mean over s_t of the model's H-step return of the deterministic policy (first action
  the recorded a_t; model_step with the run's reward mode; a row stops at the model's termination).
- <kind>/model_return_penalized: the same trajectories' sum of r - lambda_kind u_kind (lambda_kind: the
  run's lambda in the kind's own units when mopo.penalty_units is mean or p95, else the same raw lambda).
- return_gap = mean(penalised - real) (MOPO's lower bound wants <= 0); return_gap_raw = mean(raw - real).
- penalized_below_real: fraction of start states with penalised <= real (the lower bound holding).
- real_steps / model_steps: mean steps counted in each world; model_diverged: rows stopped by a
  non-finite model step.
- distance_to_data: mean distance, in dataset-std units, from the s of at most 500 measured rows (evenly
  spaced) to the nearest of at most 50k dataset observations (a fixed-seed subsample); _p90: its 90th
  percentile.
Unprefixed spearman, violation_rate, ... are those of the configured penalty kind."""
MAX_ROWS = 2_000
"""Recorded transitions measured (evenly spaced above this): the one-step figures' cost bound."""
MAX_START_STATES = 1_000
"""Start states of the H-step model rollouts (evenly spaced above this): H batched ensemble calls on them."""
MAX_DATA_STATES = 50_000
"""Dataset observations the nearest-neighbour distance searches (a fixed-seed subsample above this)."""
MAX_QUERY_STATES = 500
"""Measured rows whose distance is measured (evenly spaced above this): the search's cost bound."""


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
             prediction: tuple[Tensor, Tensor] | None = None, kinds: Sequence[str] = PENALTY_KINDS,
             generator: torch.Generator | None = None, reward_mode: RewardMode = "sample") -> dict[str, Tensor]:
    """Per-row model error, NLL and every kind's penalty on real transitions (module docstring); each [N].

    ``prediction``: ``ensemble.predict(obs, action)`` when the caller already has it. ``generator`` and
    ``reward_mode`` draw the model's own transition (``llv``'s point).
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
    point = produced_transition(mean, std, ensemble.elites, generator, reward_mode)
    for kind in kinds:
        out[f"{kind}/penalty"] = uncertainty_penalty(mean, std, kind, point, elites)
        out[f"{kind}/error"] = out["model_error" if PENALTIES[kind].columns == "all" else "model_error_state"]
    return out


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
def premise_metrics(ensemble: EnsemblePredictor, transitions: TensorDictBase, *, mdp: ModelMDP, policy: ActFn,
                    rollout_length: int | None = None, reference: DataReference | None = None,
                    seed: int = 0, max_rows: int = MAX_ROWS, max_start_states: int = MAX_START_STATES,
                    kinds: Sequence[str] = PENALTY_KINDS) -> Premise:
    """The premise figures of one evaluation (module docstring).

    ``transitions`` [N]: real transitions with the transition keys plus ``episode`` and ``step`` (long),
    ordered by episode then step, as ``evaluate_policy(record=True)`` returns them. ``mdp``: the run's model MDP.
    ``rollout_length``: H of the branched model returns (None: ``mdp.rollout_length``, the run's h). Scalars are
    means over the measured rows (one-step figures) or over the start states (H-step returns); the configured
    kind's figures also appear without
    the kind prefix. ``kinds``: the penalties measured beside the configured one (default: every kind).
    """
    kinds = list(dict.fromkeys([mdp.penalty_kind, *kinds]))
    rollout_length = mdp.rollout_length if rollout_length is None else rollout_length
    if rollout_length < 1:
        raise ValueError(f"premise: rollout_length must be >= 1, got {rollout_length}")
    device = ensemble.elites.device
    td = transitions.to(device)
    windows = real_windows(td, rollout_length)
    measured = evenly_spaced(td.shape[0], max_rows, device)
    obs, action = td[OBSERVATION][measured], td[ACTION][measured]
    prediction = ensemble.predict(obs, action)
    rows = one_step(ensemble, obs, action, td[REWARD][measured], td[NEXT_OBSERVATION][measured], prediction, kinds,
                    torch.Generator(device=device).manual_seed(seed + 1), mdp.reward_mode)
    rows["row"] = measured
    scalars: dict[str, float] = {
        "transitions": float(td.shape[0]),
        "rows_measured": float(measured.numel()),
        "model_error_mean": float(rows["model_error"].mean()),
        "model_error_mse": float(rows["model_error_mse"].mean()),
        "reward_error_mean": float(rows["reward_error"].mean()),
        "nll": float(rows["nll"].mean()),
    }
    for kind in kinds:
        u, err = rows[f"{kind}/penalty"], rows[f"{kind}/error"]
        rows[f"{kind}/violated"] = err > u
        scalars[f"{kind}/spearman"] = float(spearman(u, err))
        scalars[f"{kind}/violation_rate"] = float(rows[f"{kind}/violated"].double().mean())
        scalars[f"{kind}/penalty_mean"] = float(u.mean())

    # H-step branched returns from the measured rows that have a real window
    candidates = windows["eligible"][measured].nonzero().squeeze(-1)
    start = candidates[evenly_spaced(candidates.numel(), max_start_states, device)]  # among measured rows
    gen = torch.Generator(device=device).manual_seed(seed)
    model = branched_returns(ensemble, obs[start], rollout_length, policy, mdp=mdp, generator=gen,
                             first_action=action[start],
                             first_prediction=(prediction[0][:, start], prediction[1][:, start]), kinds=kinds)
    real = windows["real"][measured[start]]
    rows.update({"return/start": start, "return/real": real, "return/raw": model["raw"],
                 "return/steps": model["steps"]})
    scalars.update({
        "rollout_length": float(rollout_length),
        "start_states": float(start.numel()),
        "real_return": float(real.mean()),
        "model_return_raw": float(model["raw"].mean()),
        "return_gap_raw": float((model["raw"] - real).mean()),
        "real_steps": float(windows["steps"][measured[start]].double().mean()),
        "model_steps": float(model["steps"].double().mean()),
        "model_diverged": float(model["diverged"].double().mean()),
    })
    for kind in kinds:
        penalized = model[f"penalized/{kind}"]
        rows[f"return/{kind}/penalized"] = penalized
        scalars[f"{kind}/model_return_penalized"] = float(penalized.mean())
        scalars[f"{kind}/return_gap"] = float((penalized - real).mean())
        scalars[f"{kind}/penalized_below_real"] = float((penalized <= real).double().mean())
    for name in ("spearman", "violation_rate", "penalty_mean", "model_return_penalized", "return_gap",
                 "penalized_below_real"):
        scalars[name] = scalars[f"{mdp.penalty_kind}/{name}"]

    if reference is not None:
        query = evenly_spaced(obs.shape[0], MAX_QUERY_STATES, device)
        dist = distance_to_data(obs[query], reference)
        rows["distance_to_data"], rows["distance_row"] = dist, query
        scalars["distance_to_data"] = float(dist.mean())
        scalars["distance_to_data_p90"] = float(dist.quantile(0.9)) if dist.numel() else math.nan
    return Premise(scalars, {k: v.detach().cpu() for k, v in rows.items()})
