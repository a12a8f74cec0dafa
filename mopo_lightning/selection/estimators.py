"""The offline estimators ``select`` computes for every candidate, by name.

Each is a D4RL normalised score where the task has reference scores, else a return:

- ``own_mean``: the model-based value (``model_value``; Zhang et al. 2021) in the candidate's OWN dynamics
  model, the mean over its elites. Optimistic: the policy was trained against that model and exploits its errors.
- ``own_min``: the same rollouts' minimum over elites, a pessimistic lower bound across members.
- ``eval_mean``: the model-based value in the dataset's EVALUATION model (``evaluation_model``: same data and
  settings, another seed), which no candidate saw (TOReL/SOReL 2025 roll candidates out in such a model).
- ``eval_min``: its minimum over elites: pessimistic, in a model the policy never saw.
- ``fqe``: Fitted Q Evaluation (Le et al. 2019; Paine et al. 2020; ``fqe.py``), with ``fqe.num_updates`` > 0.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any, Literal

import torch
from tensordict import TensorDict
from torch import Tensor

from mopo_lightning.envs.tasks import Task
from mopo_lightning.selection.fqe import FQEConfig, Policy, evaluate_policy, return_scale
from mopo_lightning.selection.model_value import MemberEnsemble, ModelValueConfig, ModelValueResult, model_value

Estimator = Literal["own_mean", "own_min", "eval_mean", "eval_min", "fqe"]
ESTIMATORS: dict[str, str] = {
    "own_mean": "model value in the run's own model, mean over elites (optimistic)",
    "own_min": "model value in the run's own model, min over elites (lower bound)",
    "eval_mean": "model value in the evaluation model (another seed), mean over elites",
    "eval_min": "model value in the evaluation model (another seed), min over elites (lower bound)",
    "fqe": "fitted Q evaluation (d3rlpy's defaults)",
}
"""Every estimator's name and what it is, in the order tables show them."""


@dataclass(frozen=True)
class EstimatorConfig:
    """The estimators' knobs (``select``'s ``--model_value.*``, ``--fqe.*``)."""

    model_value: ModelValueConfig = field(default_factory=lambda: ModelValueConfig(max_starts=200))
    """The model-based estimates (own and evaluation model): 200 episode start states (measured enough:
    docs/selection.md), the elites' means, D4RL's 1000 steps."""
    fqe: FQEConfig = field(default_factory=lambda: FQEConfig(num_updates=0))
    """FQE; ``num_updates`` 0 (the default) leaves it out: d3rlpy's 100k updates take minutes per policy here."""
    evaluation_model: bool = True
    """Roll out in the evaluation model too (``eval_*``)."""


def _scores(result: ModelValueResult, prefix: str) -> dict[str, float]:
    scored = result.normalized_mean is not None
    mean = result.normalized_mean if scored else result.return_mean
    low = result.normalized_min if scored else result.return_min
    return {f"{prefix}_mean": float(mean), f"{prefix}_min": float(low)}  # type: ignore[arg-type]


@torch.no_grad()
def estimate(policy: Policy, own: MemberEnsemble, evaluation: MemberEnsemble | None, starts: Tensor, task: Task,
             config: EstimatorConfig, rows: TensorDict | None = None) -> tuple[dict[str, float], dict[str, Any]]:
    """One policy's estimates by name, and their details (per-member values, episode lengths, FQE's fit)."""
    scores, details = {}, {}
    for prefix, ensemble in (("own", own), ("eval", evaluation)):
        if ensemble is None:
            continue
        result = model_value(ensemble, policy, starts, task, config.model_value)
        scores |= _scores(result, prefix)
        details[f"{prefix}_model"] = result.as_dict()
    if config.fqe.num_updates > 0:
        if rows is None:
            raise ValueError("FQE needs the dataset's rows")
        with torch.enable_grad():
            scale = return_scale(config.fqe.gamma, config.model_value.horizon)
            fqe = evaluate_policy(rows, policy, config.fqe, starts, task, scale)
        scores["fqe"] = float(fqe.normalized_score if task.has_reference_scores else fqe.value * scale)
        details["fqe"] = fqe.as_dict()
    return scores, details


def with_updates(config: EstimatorConfig, fqe_updates: int) -> EstimatorConfig:
    """``config`` with FQE at ``fqe_updates`` updates."""
    return replace(config, fqe=replace(config.fqe, num_updates=fqe_updates))
