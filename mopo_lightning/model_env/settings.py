"""MOPO's own knobs, one config group (``mopo.*``): what turns MBPO into MOPO, and how the model is used.

Sources: MOPO reference sections 2 (the penalised MDP, r - lambda * u) and 4 (h and lambda per dataset; 50,000
start states every 1000 updates; 5 epochs of rollouts kept; 5% real rows per SAC batch). One name per
concept across config, code, logs and ``results.json``: h is ``rollout_length``, lambda is ``penalty_coef`` (in the
units ``penalty_units`` names; the policy stage's model MDP holds it in the raw penalty's units as
``model_env.mdp.ModelMDP.penalty_coef_raw``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, get_args

from mopo_lightning.guards import ConfigError, did_you_mean
from mopo_lightning.model_env.penalties import PenaltyKind, PenaltyUnits

RewardMode = Literal["sample", "mean"]
"""The model's reward: ``MOPOSettings.reward_mode``."""


@dataclass(frozen=True)
class MOPOSettings:
    """MOPO's knobs.

    Args:
        rollout_length: h, model steps per branched rollout (per dataset, reference section 4).
        penalty_coef: lambda of r - lambda * u (per dataset); 0 gives MBPO.
        penalty_kind: u by name (``model_env/penalties.py``): ``aleatoric`` max_i ||sigma_i|| (MOPO), the authors'
            ``disagreement``, or Lu et al.'s ``max_pairwise_diff``, ``ensemble_std``, ``ensemble_var``, ``llv`` (these
            four over the next state, as their reference code), ``loo_kl`` (M2AC's, averaged over the elites).
        penalty_units: ``raw`` (the paper's lambda), or lambda in units of the kind's ``mean`` or ``p95`` on the
            data, measured with the model: lambda / that scale then weighs the raw u.
        rollout_batch_size: start states per rollout over all ranks (MOPO: 50,000).
        rollout_freq: SAC updates between rollouts (MOPO: 1000).
        model_retain_epochs: epochs of rollouts the FIFO model buffer keeps (MOPO: 5).
        real_ratio: fraction of each SAC batch drawn from the real data (MOPO: 0.05; ``int`` of it, as the authors).
        reward_mode: the model's reward, of the elite drawn per row (whose Gaussian sample is the next state either
            way): ``sample``, that sample's reward (the authors' code), or ``mean``, the elite's mean reward (the
            paper).
    """

    rollout_length: int = 5
    penalty_coef: float = 1.0
    penalty_kind: PenaltyKind = "aleatoric"
    penalty_units: PenaltyUnits = "raw"
    rollout_batch_size: int = 50_000
    rollout_freq: int = 1000
    model_retain_epochs: int = 5
    real_ratio: float = 0.05
    reward_mode: RewardMode = "sample"

    def __post_init__(self) -> None:
        for name in ("rollout_length", "rollout_batch_size", "rollout_freq", "model_retain_epochs"):
            if getattr(self, name) < 1:
                raise ConfigError(f"mopo.{name} must be at least 1, got {getattr(self, name)}")
        if self.penalty_coef < 0:
            raise ConfigError(f"mopo.penalty_coef (lambda) must be >= 0 (0 gives MBPO), got {self.penalty_coef}")
        if not 0.0 <= self.real_ratio <= 1.0:
            raise ConfigError(f"mopo.real_ratio must be in [0, 1], got {self.real_ratio}")
        for name, kind in (("penalty_kind", PenaltyKind), ("penalty_units", PenaltyUnits),
                           ("reward_mode", RewardMode)):
            value = getattr(self, name)
            if value not in get_args(kind):
                raise ConfigError(f"mopo.{name} must be one of {', '.join(get_args(kind))}, got {value!r}"
                                  f"{did_you_mean(str(value), get_args(kind))}")

    def real_rows(self, batch_size: int) -> int:
        """Real rows in a SAC batch of ``batch_size``: ``int(batch_size * real_ratio)`` (12 of 256, as the authors)."""
        return int(batch_size * self.real_ratio)
