"""The uncertainty penalties u(s, a) of r - lambda * u, as Lu et al. (2022) compare them, and their scales.

Sources: Lu, Ball, Parker-Holder, Osborne and Roberts, "Revisiting Design Choices in Offline Model-Based
Reinforcement Learning" (ICLR 2022, arXiv 2110.04135) compare the heuristics that offline model-based papers
use, each computed from the ensemble's per-member Gaussians N(mu_i, diag sigma_i^2), i = 1..E; each kind below
names the paper it comes from. MOPO's authors' code adds ``disagreement`` (mopo_reference.md section 2). The
closest public code to Lu et al.'s comparison (a PyTorch MOPO whose ``Ensemble.get_penalty`` holds ``morel``,
``lompo``, ``m2ac``, ``ensemble_var`` and ``ensemble_std``) is followed where the papers leave a choice open.

Every penalty is one batched function ``(mean, std, point, elites) -> u``: mean, std [E, B, C] over the
columns the kind reads, ``point`` [B, C] the transition the model produced (the drawn elite's sample; only
``llv`` reads it), ``elites`` [K] the members a model step draws from (only ``loo_kl`` reads it; None: all
E) -> u [B]. No loop over members or rows. Columns (``Penalty.columns``; ``uncertainty_penalty`` hands each
kind its own, and the premise monitor measures the model's error over the same ones):

- ``all`` (reward, then the next state): ``aleatoric``, as MOPO's own code (section 2), and ``loo_kl``, as the
  reference's M2AC score, which concatenates both.
- ``next_state``: ``disagreement`` (MOPO's code), ``max_pairwise_diff``, ``ensemble_std``, ``ensemble_var`` and
  ``llv``, as the reference computes them (MOReL's own models predict the next state alone).

Deliberate differences from that code, each for u to be the papers' function of (s, a): the spreads read the
members' means (the reference's ``ensemble_var``, ``ensemble_std`` and ``morel`` read each member's Gaussian
sample), and variances over members are population ones, divided by E (the reference's ``torch.var`` divides
by E - 1). The equal-weight mixture of the E members has variance mean_i sigma_i^2 + (1/E) sum_i (mu_i -
mu_bar)^2 exactly (Lakshminarayanan et al. 2017, section 2.4), which is what Lu et al. define; 1/(E - 1) would
estimate the spread of a population of models the ensemble is a sample of, another quantity. The difference is a
factor E / (E - 1) (7/6) on the spread term: all of ``llv``, where no ranking changes and lambda in ``mean`` or
``p95`` units cancels it exactly, and the epistemic part of ``ensemble_var`` and ``ensemble_std``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Literal, get_args

import torch
from torch import Tensor

from mopo_lightning.guards import ConfigError, unknown_name

PenaltyKind = Literal["aleatoric", "disagreement", "max_pairwise_diff", "ensemble_std", "ensemble_var", "llv",
                      "loo_kl"]
PenaltyUnits = Literal["raw", "mean", "p95"]
"""lambda in raw penalty units (the paper's), or in units of the kind's mean or 95th percentile on the data."""
Columns = Literal["all", "next_state"]
SCALE_ROWS = 10_000
"""Dataset transitions the scales are measured on (a fixed-seed uniform subsample above this)."""
SCALES_VERSION = 2
"""Bumped when a definition below changes: stored scales of another version are measured again (version 2:
next-state columns for max_pairwise_diff, ensemble_std, ensemble_var and llv; loo_kl over the elites)."""


def max_aleatoric(mean: Tensor, std: Tensor, point: Tensor | None = None, elites: Tensor | None = None) -> Tensor:
    """max_i ||sigma_i||_2 over the outputs (all 1 + O): MOPO's u (Yu et al. 2020, section 4.3, the Frobenius norm
    of the diagonal Sigma_i), Lu et al.'s "max aleatoric"."""
    return std.norm(dim=-1).amax(dim=0)


def disagreement(mean: Tensor, std: Tensor, point: Tensor | None = None, elites: Tensor | None = None) -> Tensor:
    """max_i ||mu_i - mean_j mu_j||_2 (over the next state): the alternative in MOPO's code."""
    return (mean - mean.mean(dim=0)).norm(dim=-1).amax(dim=0)


def max_pairwise_diff(mean: Tensor, std: Tensor, point: Tensor | None = None,
                      elites: Tensor | None = None) -> Tensor:
    """max_{i,j} ||mu_i - mu_j||_2 (over the next state): MOReL's ensemble discrepancy (Kidambi et al. 2020, its
    USAD), Lu et al.'s "max pairwise diff". ``cdist`` without the matmul shortcut: exact, no [E, E, B, C] tensor."""
    rows = mean.transpose(0, 1)  # [B, E, C]
    return torch.cdist(rows, rows, compute_mode="donot_use_mm_for_euclid_dist").flatten(1).amax(dim=-1)


def mixture_variance(mean: Tensor, std: Tensor) -> Tensor:
    """Per output, the variance of the equal-weight mixture of the members' Gaussians: mean_i sigma_i^2 +
    mean_i (mu_i - mu_bar)^2 (population: 1/E, module docstring): [E, B, C] -> [B, C]."""
    return std.square().mean(dim=0) + (mean - mean.mean(dim=0)).square().mean(dim=0)


def ensemble_std(mean: Tensor, std: Tensor, point: Tensor | None = None, elites: Tensor | None = None) -> Tensor:
    """Lu et al.'s "ensemble std": the mixture's standard deviation per output, averaged over the next state."""
    return mixture_variance(mean, std).sqrt().mean(dim=-1)


def ensemble_var(mean: Tensor, std: Tensor, point: Tensor | None = None, elites: Tensor | None = None) -> Tensor:
    """Lu et al.'s "ensemble var": the mixture's variance per output, averaged over the next state."""
    return mixture_variance(mean, std).mean(dim=-1)


def llv(mean: Tensor, std: Tensor, point: Tensor | None = None, elites: Tensor | None = None) -> Tensor:
    """Lu et al.'s log-likelihood variance (LOMPO, Rafailov et al. 2021): Var_i log N(point; mu_i, diag
    sigma_i^2), the population variance over members of the log-likelihood (summed over the next state) of the
    next state the model produced. The reward column is not read, so the reward mode cannot change it. The
    Gaussian's constant -C/2 log(2 pi), the same for every member, cancels in the variance and is left out."""
    if point is None:
        raise ValueError("the llv penalty needs the transition the model produced (point [B, 1 + O])")
    z = (point.to(mean.dtype) - mean) / std
    log_lik = -0.5 * z.square().sum(-1) - std.log().sum(-1)  # [E, B], up to the constant
    return (log_lik - log_lik.mean(dim=0)).square().mean(dim=0)


def loo_kl(mean: Tensor, std: Tensor, point: Tensor | None = None, elites: Tensor | None = None) -> Tensor:
    """M2AC's one-vs-rest uncertainty (Pan et al. 2020), Lu et al.'s leave-one-out KL: KL(N_i || N_-i), N_-i
    the Gaussian moment-matched to the other E - 1 members (every member, elite or not, as the reference),
    summed over all outputs, averaged over the elites i (all E without ``elites``).

    The reference scores the elite that made the step; a rollout draws that elite uniformly, so the mean over
    the elites is the same penalty in expectation (E[r - lambda u] per step does not change) while u stays a
    function of (s, a) alone, like every other kind: the premise's rank correlation with the model's error, the
    scales and the H-step returns then measure the kind and not the draw. Moments from member-centred values
    (c_i = mu_i - mu_bar), so nothing cancels at the states' magnitude: mu_i - mu_-i = c_i E / (E - 1), and the
    others' mixture variance is (sum_{j != i} sigma_j^2 + sum_j c_j^2 - c_i^2 E / (E - 1)) / (E - 1).
    """
    e = mean.shape[0]
    if e < 2:
        raise ValueError("the loo_kl penalty needs at least 2 members")
    var, centred = std.square(), mean - mean.mean(dim=0)  # [E, B, C]
    spread = centred.square()
    scored = slice(None) if elites is None else elites.to(mean.device)  # the members that may make the step
    var_i, spread_i = var[scored], spread[scored]  # [K, B, C]
    rest = ((var.sum(0) - var_i) + (spread.sum(0) - spread_i * e / (e - 1)).clamp_min(0)) / (e - 1)  # N_-i
    gap = spread_i * (e / (e - 1)) ** 2  # (mu_i - mu_-i)^2
    kl = 0.5 * ((rest / var_i).log() + (var_i + gap) / rest - 1)  # [K, B, C]
    return kl.sum(dim=-1).mean(dim=0)


@dataclass(frozen=True)
class Penalty:
    """One registered penalty: its function and the output columns it reads."""

    fn: Callable[[Tensor, Tensor, Tensor | None, Tensor | None], Tensor]
    columns: Columns
    """``all`` (reward and next state) or ``next_state``: what ``uncertainty_penalty`` hands ``fn``, and the
    columns over which the premise monitor measures the model's error beside u."""


PENALTIES: dict[str, Penalty] = {
    "aleatoric": Penalty(max_aleatoric, "all"),
    "disagreement": Penalty(disagreement, "next_state"),
    "max_pairwise_diff": Penalty(max_pairwise_diff, "next_state"),
    "ensemble_std": Penalty(ensemble_std, "next_state"),
    "ensemble_var": Penalty(ensemble_var, "next_state"),
    "llv": Penalty(llv, "next_state"),
    "loo_kl": Penalty(loo_kl, "all"),
}
"""The one registry of penalty kinds, by the name ``mopo.penalty_kind`` takes."""
PENALTY_KINDS: tuple[PenaltyKind, ...] = tuple(PENALTIES)  # type: ignore[assignment]
assert get_args(PenaltyKind) == PENALTY_KINDS, "PenaltyKind must list the registry's names, in its order"


def uncertainty_penalty(mean: Tensor, std: Tensor, kind: PenaltyKind = "aleatoric", point: Tensor | None = None,
                        elites: Tensor | None = None) -> Tensor:
    """u(s, a) per row: mean, std [E, B, 1 + O] of all members (point [B, 1 + O], elites [K]) -> [B].

    The kind sees its ``Penalty.columns`` only (``next_state``: columns 1:). An unknown kind is a one-line
    ``guards.UnknownName`` (a ``ConfigError``, so a ``ValueError``).
    """
    if kind not in PENALTIES:
        raise unknown_name("penalty kind", kind, PENALTY_KINDS)
    penalty = PENALTIES[kind]
    if penalty.columns == "next_state":
        mean, std, point = mean[..., 1:], std[..., 1:], None if point is None else point[..., 1:]
    return penalty.fn(mean, std, point, elites)


def elite_sample(mean: Tensor, std: Tensor, elites: Tensor,
                 generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
    """One elite drawn uniformly per row and its Gaussian sample (the authors' model step): (mu, sample) [B, D].

    Only the drawn elite is sampled: the same distribution as sampling every member and keeping one.
    """
    batch, device = mean.shape[1], mean.device
    elites = elites.to(device)
    member = elites[torch.randint(elites.numel(), (batch,), generator=generator, device=device)]  # [B]
    rows = torch.arange(batch, device=device)
    mu, sigma = mean[member, rows], std[member, rows]  # [B, D]
    eps = torch.randn(mu.shape, generator=generator, device=device, dtype=mu.dtype)
    return mu, mu + eps * sigma


# ------------------------------------------------------------------ scales on the data
PenaltyScales = dict[str, dict[str, float]]
"""{kind: {"mean": ..., "p95": ...}}: each kind's mean and 95th percentile over the data's transitions."""


@torch.no_grad()
def measure_scales(predict: Callable[[Tensor, Tensor], tuple[Tensor, Tensor]], elites: Tensor, obs: Tensor,
                   action: Tensor, max_rows: int = SCALE_ROWS, seed: int = 0) -> dict:
    """Every kind's scale on the data: its mean and 95th percentile over at most ``max_rows`` transitions.

    ``predict``: the ensemble's (obs [B, O], action [B, A]) -> (mean, std) [E, B, 1 + O]. Rows: a uniform
    subsample without replacement (fixed ``seed``) when the data is larger. ``llv``'s point is the sample of an
    elite drawn per row, as a rollout step draws it, in either ``mopo.reward_mode``: the modes differ in the
    point's reward column only (the elite's sample or mean reward), which no kind reads, so one record serves
    both, as it must (it is stored with the model, whose fingerprint holds no ``mopo`` setting). ``loo_kl``
    scores ``elites``, as in the rollouts. Returns the stored record: ``version``, ``rows``, ``kinds`` (a
    ``PenaltyScales``).
    """
    n = obs.shape[0]
    gen = torch.Generator().manual_seed(seed)
    pick = torch.randperm(n, generator=gen)[:max_rows] if n > max_rows else torch.arange(n)
    device = elites.device
    mean, std = predict(obs[pick].to(device), action[pick].to(device))
    _, point = elite_sample(mean, std, elites, torch.Generator(device=device).manual_seed(seed))
    kinds = {}
    for kind in PENALTY_KINDS:
        u = uncertainty_penalty(mean, std, kind, point, elites).double()
        kinds[kind] = {"mean": float(u.mean()), "p95": float(u.quantile(0.95))}
    return {"version": SCALES_VERSION, "rows": int(pick.numel()), "kinds": kinds}


def scales_current(record: Mapping | None) -> bool:
    """A stored scales record of this definitions' version, covering every registered kind."""
    return (isinstance(record, Mapping) and record.get("version") == SCALES_VERSION
            and set(PENALTY_KINDS) <= set(record.get("kinds", {})))


def penalty_coef_in_raw_units(penalty_coef: float, kind: str, units: PenaltyUnits,
                              scales: PenaltyScales | None) -> float:
    """The lambda applied to the raw penalty: ``penalty_coef`` itself (``raw``), else it over the kind's scale."""
    if units == "raw":
        return float(penalty_coef)
    if units not in get_args(PenaltyUnits):
        raise ConfigError(f"mopo.penalty_units must be one of {', '.join(get_args(PenaltyUnits))}, got {units!r}")
    if scales is None or kind not in scales:
        raise ConfigError(f"mopo.penalty_units={units} needs the model's {kind} penalty scale (stage 1 records it)")
    scale = float(scales[kind][units])
    if not (math.isfinite(scale) and scale > 0):
        raise ConfigError(f"the {kind} penalty's {units} on the data is {scale}: lambda cannot be set in its units")
    return float(penalty_coef) / scale
