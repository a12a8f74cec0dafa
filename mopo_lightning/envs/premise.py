"""MOPO's premise, measured on real transitions: does the penalty u(s, a) track the model's true error?

MOPO (Yu et al. 2020, arXiv 2005.13239, section 4, assumption 4.3) asks for an admissible error estimator:
the model's error at (s, a) is at most u(s, a), so the penalised model return lower-bounds the real one.
Given real transitions (an evaluation's episodes), these pure functions measure how far that holds where
the current policy goes. Pure tensor code: no Lightning, no gymnasium. Definitions (per real row):

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
- spearman: rank correlation of u_kind and error_kind over the rows (ties broken by order).
- model returns: from each episode's first real state, the deterministic policy is rolled through
  ``model_step`` (the configured reward mode, the sampled next state, the task's termination function,
  a fixed generator) for as many steps as the real episode lasted, stopping early where the model
  terminates. raw = sum of the model's rewards; penalized_kind = sum of (reward - lambda * u_kind) along
  the same trajectory. return_gap = penalized - real (MOPO wants <= 0); return_gap_raw = raw - real.
  A row whose model reward or penalty turns non-finite stops there (``model_diverged``: the fraction).
- distance_to_data: Euclidean distance, in dataset-std units per observation dimension, from each real
  state s to its nearest neighbour among at most ``MAX_DATA_STATES`` dataset observations (a uniform
  subsample without replacement, fixed seed, when the dataset is larger), measured for at most
  ``MAX_QUERY_STATES`` visited states (evenly spaced rows when there are more).
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
from mopo_lightning.transitions import ACTION, NEXT_OBSERVATION, OBSERVATION, REWARD

PENALTY_KINDS: tuple[PenaltyKind, ...] = ("aleatoric", "disagreement")
MAX_DATA_STATES = 50_000
"""Dataset observations the nearest-neighbour distance searches (a fixed-seed subsample above this)."""
MAX_QUERY_STATES = 2_000
"""Visited states whose distance is measured (evenly spaced rows above this): the search's cost bound."""
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
    """``scalars``: the figures (keys as logged under ``premise/``); ``rows``: per-transition tensors [N]."""

    scalars: dict[str, float]
    rows: dict[str, Tensor]


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


def one_step(ensemble: EnsemblePredictor, obs: Tensor, action: Tensor, reward: Tensor,
             next_obs: Tensor) -> dict[str, Tensor]:
    """Per-row model error, NLL and both penalties on real transitions (module docstring); each [N]."""
    mean, std = ensemble.predict(obs, action)  # [E, N, 1 + O], next state with s added
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
    """An ``EnsemblePredictor`` that keeps its last prediction, so both penalties come from one call."""

    def __init__(self, ensemble: EnsemblePredictor) -> None:
        self.ensemble, self.elites = ensemble, ensemble.elites
        self.last: tuple[Tensor, Tensor] | None = None

    def predict(self, obs: Tensor, action: Tensor) -> tuple[Tensor, Tensor]:
        self.last = self.ensemble.predict(obs, action)
        return self.last


@torch.no_grad()
def model_returns(ensemble: EnsemblePredictor, start_obs: Tensor, lengths: Tensor, policy: ActFn, *,
                  termination_fn: TerminationFn, settings: PenaltySettings,
                  generator: torch.Generator | None = None) -> dict[str, Tensor]:
    """Roll ``policy`` through the model from start_obs [B, O] for lengths [B] steps (or to termination).

    Returns per episode [B]: ``raw`` (sum of model rewards), ``penalized/<kind>`` (sum of reward - lambda
    u_kind along the same trajectory, both kinds), ``length`` (model steps counted) and ``diverged`` (the
    model produced a non-finite reward or penalty: the row stops there, that step not counted). Only live
    rows reach the ensemble; the loop runs over steps, never over rows.
    """
    recorder = _Recorder(ensemble)
    b, device = start_obs.shape[0], start_obs.device
    obs, lengths = start_obs.clone(), lengths.to(device)
    raw = torch.zeros(b, device=device, dtype=torch.float64)
    penalty = {kind: torch.zeros_like(raw) for kind in PENALTY_KINDS}
    taken = torch.zeros(b, dtype=torch.long, device=device)
    diverged = torch.zeros(b, dtype=torch.bool, device=device)
    alive = lengths > 0
    for _ in range(int(lengths.max()) if b else 0):
        rows = alive.nonzero().squeeze(-1)
        if rows.numel() == 0:
            break
        action = policy(obs[rows])
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
        alive[rows] = finite & ~nxt["terminated"].reshape(-1) & (taken[rows] < lengths[rows])
    out = {"raw": raw, "length": taken, "diverged": diverged}
    out.update({f"penalized/{kind}": raw - settings.coef * penalty[kind] for kind in PENALTY_KINDS})
    return out


def distance_to_data(states: Tensor, reference: DataReference, chunk: int = 1024) -> Tensor:
    """Nearest-neighbour distance in dataset-std units: states [N, O] -> [N] (chunked ``torch.cdist``)."""
    ref = reference.states.to(states.device)
    x = (states.float() - reference.mean.to(states.device)) / reference.std.to(states.device)
    return torch.cat([torch.cdist(x[i:i + chunk], ref).amin(dim=-1) for i in range(0, x.shape[0], chunk)])


@torch.no_grad()
def premise_metrics(ensemble: EnsemblePredictor, transitions: TensorDictBase, *, termination_fn: TerminationFn,
                    settings: PenaltySettings, policy: ActFn, reference: DataReference | None = None,
                    seed: int = 0) -> Premise:
    """The premise figures of one evaluation (module docstring).

    ``transitions`` [N]: real transitions with the transition keys plus ``episode`` and ``step`` (long),
    as ``evaluate_policy(record=True)`` returns them; each episode's rows must start at step 0.
    Scalars are means over rows (one-step figures) or over episodes (returns); the configured kind's
    figures also appear without the kind prefix.
    """
    device = ensemble.elites.device
    td = transitions.to(device)
    obs, action, next_obs = td[OBSERVATION], td[ACTION], td[NEXT_OBSERVATION]
    rows = one_step(ensemble, obs, action, td[REWARD], next_obs)
    scalars: dict[str, float] = {
        "transitions": float(obs.shape[0]),
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

    # model returns from the episodes' first states, over the real episodes' lengths
    episode = td[EPISODE]
    ids, index = torch.unique(episode, return_inverse=True)  # sorted ids, row -> episode slot
    lengths = torch.bincount(index, minlength=ids.numel())
    real = torch.zeros(ids.numel(), dtype=torch.float64, device=device)
    real.index_add_(0, index, td[REWARD].reshape(-1).double())
    first = td[STEP] == 0
    assert int(first.sum()) == ids.numel(), "every episode needs its step-0 row"
    starts = torch.empty_like(obs[: ids.numel()])
    starts[index[first]] = obs[first]
    gen = torch.Generator(device=device).manual_seed(seed)
    model = model_returns(ensemble, starts, lengths, policy, termination_fn=termination_fn, settings=settings,
                          generator=gen)
    scalars.update({
        "real_return": float(real.mean()),
        "model_return_raw": float(model["raw"].mean()),
        "return_gap_raw": float((model["raw"] - real).mean()),
        "model_episode_length": float(model["length"].double().mean()),
        "model_diverged": float(model["diverged"].double().mean()),
        "real_episode_length": float(lengths.double().mean()),
    })
    for kind in PENALTY_KINDS:
        penalized = model[f"penalized/{kind}"]
        scalars[f"{kind}/model_return_penalized"] = float(penalized.mean())
        scalars[f"{kind}/return_gap"] = float((penalized - real).mean())
        scalars[f"{kind}/penalized_below_real"] = float((penalized <= real).double().mean())
    for name in ("spearman", "violation_rate", "penalty_mean", "model_return_penalized", "return_gap",
                 "penalized_below_real"):
        scalars[name] = scalars[f"{settings.kind}/{name}"]

    if reference is not None:
        query = torch.linspace(0, obs.shape[0] - 1, min(obs.shape[0], MAX_QUERY_STATES), device=device).long()
        dist = distance_to_data(obs[query], reference)
        rows["distance_to_data"] = dist  # [min(N, MAX_QUERY_STATES)]: the rows ``query`` picks
        scalars["distance_to_data"] = float(dist.mean())
        scalars["distance_to_data_p90"] = float(dist.quantile(0.9)) if dist.numel() else math.nan
    return Premise(scalars, {k: v.detach().cpu() for k, v in rows.items()})
