"""ModelMDP: MOPO's penalised model MDP, r - lambda * u, as one frozen value built once per run.

MOPO (Yu et al. 2020, arXiv 2005.13239, section 4) trains on the learned model's MDP with the reward penalised by
lambda times the uncertainty u(s, a). Everything a model step needs besides the ensemble is this object: the penalty
kind and lambda in the raw penalty's units, the reward mode, the task's termination function and h. The recipe builds
it once after stage 1 (``ModelMDP.from_settings``: the MOPO settings, the stage-1 penalty scales, the task) and hands
the same object to the rollouts (``model_env.rollouts.ModelRollouts``), the model env and ``model_step``
(``model_env.env``), the premise monitor and its H-step returns (``diagnostics/``). lambda is converted to the raw
penalty's units here and nowhere else.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from mopo_lightning.envs.tasks import Task
from mopo_lightning.envs.termination import TerminationFn
from mopo_lightning.guards import ConfigError
from mopo_lightning.model_env.penalties import (
    PENALTY_KINDS,
    PenaltyKind,
    PenaltyScales,
    penalty_coef_in_raw_units,
)
from mopo_lightning.model_env.settings import MOPOSettings, RewardMode


@dataclass(frozen=True)
class ModelMDP:
    """The penalised model MDP the policy stage rolls out in (module docstring); the knobs are ``MOPOSettings``'."""

    termination_fn: TerminationFn
    """The task's ``(obs, action, next_obs) -> terminated [B]``: a model row stops at its terminal transition."""
    penalty_coef_raw: float
    """lambda applied to the raw u of ``penalty_kind``: ``mopo.penalty_coef`` itself (``penalty_units`` raw), else
    it over the kind's ``mean`` or ``p95`` on the data (``model_env.penalties.penalty_coef_in_raw_units``)."""
    penalty_kind: PenaltyKind = "aleatoric"
    """u, the penalty that trains: ``mopo.penalty_kind``."""
    reward_mode: RewardMode = "sample"
    """``mopo.reward_mode``."""
    rollout_length: int = 5
    """h, model steps per branched rollout: ``mopo.rollout_length``."""
    penalty_coefs_raw: Mapping[str, float] = field(default_factory=dict)
    """Every measured kind's raw lambda (the run's lambda in the run's units, over each kind's own scale), for the
    premise's penalised returns: ``penalty_coef_raw_for``."""

    def __post_init__(self) -> None:
        if self.rollout_length < 1:
            raise ConfigError(f"the model MDP's rollout_length (h) must be at least 1, got {self.rollout_length}")
        object.__setattr__(self, "penalty_coef_raw", float(self.penalty_coef_raw))
        object.__setattr__(self, "penalty_coefs_raw", dict(self.penalty_coefs_raw))

    @classmethod
    def from_settings(cls, mopo: MOPOSettings, scales: PenaltyScales | None, task: Task) -> ModelMDP:
        """The run's model MDP: ``mopo``'s penalty, reward mode and h, lambda in the raw units of every kind
        (``scales``: stage 1's ``penalty_scales["kinds"]``; None is enough for ``penalty_units`` raw), and
        ``task``'s termination function. A kind whose scale cannot carry lambda is refused (``ConfigError``),
        the trained kind first."""
        def raw(kind: str) -> float:
            return penalty_coef_in_raw_units(mopo.penalty_coef, kind, mopo.penalty_units, scales)

        trained = raw(mopo.penalty_kind)
        coefs = {kind: trained if kind == mopo.penalty_kind else raw(kind) for kind in PENALTY_KINDS}
        return cls(task.termination_fn, trained, mopo.penalty_kind, mopo.reward_mode, mopo.rollout_length, coefs)

    def penalty_coef_raw_for(self, kind: str) -> float:
        """The raw lambda of ``kind``'s penalised returns (``penalty_coef_raw`` for the trained kind or one not
        listed)."""
        if kind == self.penalty_kind:
            return self.penalty_coef_raw
        return float(self.penalty_coefs_raw.get(kind, self.penalty_coef_raw))
