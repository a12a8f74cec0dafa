"""PenalizedModelEnv: the uncertainty-penalised model MDP of MOPO as a batched TorchRL env.

Sources: MOPO (Yu et al. 2020, arXiv 2005.13239), section 4 and algorithm 2, and the authors' code
(reference sections 2 and 3): every member is queried, one of the elites is drawn uniformly per row,
its Gaussian sample gives the next state (and the reward: ``MOPOSettings.reward_mode``), and the reward is
penalised by lambda * u(s, a) with u = max_i ||sigma_i(s, a)||_2 over all members (the reward column included).
``penalty_kind`` picks another u from ``model_env/penalties.py`` (the authors' disagreement and the heuristics
Lu et al. 2022 compare). The MDP's settings are one ``model_env.mdp.ModelMDP``.

The pure function ``model_step`` does the work, so rollout code can step any subset of rows
without the env; ``PenalizedModelEnv._step`` calls it (on the ``_step``-masked rows only).
"""

from __future__ import annotations

from typing import Protocol

import torch
from tensordict import TensorDict, TensorDictBase
from torch import Tensor
from torchrl.data import Bounded, Categorical, Composite, Unbounded
from torchrl.envs import EnvBase

from mopo_lightning.model_env.mdp import ModelMDP
from mopo_lightning.model_env.penalties import elite_sample, uncertainty_penalty
from mopo_lightning.model_env.settings import RewardMode

__all__ = ["EnsemblePredictor", "PenalizedModelEnv", "model_step", "produced_transition"]


class EnsemblePredictor(Protocol):
    """What the env needs from a dynamics ensemble (``dynamics.ensemble.GaussianEnsemble``)."""

    elites: Tensor  # LongTensor [num_elites]

    def predict(self, obs: Tensor, action: Tensor) -> tuple[Tensor, Tensor]:
        """obs [B, O], action [B, A] -> (mean, std), each [E, B, 1 + O]: reward, then s' (s added)."""
        ...


def produced_transition(mean: Tensor, std: Tensor, elites: Tensor, generator: torch.Generator | None = None,
                        reward_mode: RewardMode = "sample") -> Tensor:
    """The transition a model step produces from the members' (mean, std) [E, B, 1 + O]: [B, 1 + O].

    An elite drawn uniformly per row; its Gaussian sample gives the next state, and the reward as ``reward_mode``
    says (``MOPOSettings.reward_mode``).
    """
    mu, sample = elite_sample(mean, std, elites, generator)
    reward = {"sample": sample, "mean": mu}[reward_mode][:, :1]  # KeyError for other modes
    return torch.cat([reward, sample[:, 1:]], dim=-1)


@torch.no_grad()
def model_step(ensemble: EnsemblePredictor, obs: Tensor, action: Tensor, mdp: ModelMDP,
               generator: torch.Generator | None = None) -> TensorDict:
    """One step of ``mdp`` for a batch of rows: obs [B, O], action [B, A] -> "next" TensorDict [B].

    Keys: ``observation`` [B, O], ``reward`` (r - ``mdp.penalty_coef_raw`` * u) [B, 1], ``raw_reward`` [B, 1],
    ``penalty`` [B, 1] (u of ``mdp.penalty_kind``, before the coefficient), ``terminated`` (``mdp.termination_fn``),
    ``truncated`` (always False), ``done`` [B, 1]. Only the chosen elite's Gaussian is sampled: the same
    distribution as sampling every member and keeping the chosen one (the authors' code), with 1/E of the
    random numbers.
    """
    mean, std = ensemble.predict(obs, action)  # [E, B, 1 + O] each
    batch = obs.shape[0]
    point = produced_transition(mean, std, ensemble.elites, generator, mdp.reward_mode)  # [B, 1 + O]
    raw_reward, next_obs = point[:, :1], point[:, 1:]  # [B, 1], [B, O]
    u = uncertainty_penalty(mean, std, mdp.penalty_kind, point, ensemble.elites).unsqueeze(-1)  # [B, 1]
    terminated = mdp.termination_fn(obs, action, next_obs).reshape(batch, 1)
    return TensorDict(
        observation=next_obs,
        reward=raw_reward - mdp.penalty_coef_raw * u,
        raw_reward=raw_reward,
        penalty=u,
        terminated=terminated,
        truncated=torch.zeros_like(terminated),
        done=terminated.clone(),
        batch_size=[batch],
    )


class PenalizedModelEnv(EnvBase):
    """MOPO's penalised model MDP (``mdp``) over ``batch_size`` independent rows.

    Observations: ``observation`` [N, O] (the model's next state), plus ``raw_reward`` and ``penalty``
    [N, 1] for logging (zeros after reset).
    Action: [N, A] in [-1, 1].
    Reward: [N, 1], r - ``mdp.penalty_coef_raw`` * u(s, a) (``model_step``).
    Done: ``terminated`` from ``mdp.termination_fn`` on (s, a, s'); ``done = terminated``;
    ``truncated`` is always False (horizons are the caller's business).

    Reset needs start states, since a model has no initial-state distribution of its own: pass them as
    ``env.reset(TensorDict({"observation": starts}, [N]))`` (with a ``_reset`` mask the masked rows take
    the given rows). Rollouts stop rows that are done (``model_env.rollouts.branched_rollout``); they never
    auto-reset. Randomness (elite choice, noise) uses the env's own generator.
    """

    def __init__(
        self,
        ensemble: EnsemblePredictor,
        mdp: ModelMDP,
        batch_size: int,
        obs_dim: int,
        act_dim: int,
        device: torch.device | str | None = None,
        seed: int | None = None,
    ) -> None:
        """
        Args:
            ensemble: the trained dynamics ensemble (``predict`` and ``elites``).
            mdp: the penalised MDP: penalty, lambda, reward mode, termination (``model_env.mdp.ModelMDP``).
            batch_size: number of rows N stepped together.
            obs_dim: observation size O.
            act_dim: action size A.
            device: device of the env and its generator (default: the ensemble's).
            seed: seed of the env's generator (default: drawn from torch's global RNG).
        """
        if device is None:  # follow the ensemble, so the generator and its draws share a device
            params = getattr(ensemble, "parameters", None)
            device = next(iter(params()), torch.empty(0)).device if callable(params) else "cpu"
        super().__init__(device=device, batch_size=torch.Size([batch_size]))
        self.ensemble, self.mdp = ensemble, mdp
        self.obs_dim, self.act_dim = obs_dim, act_dim
        self.generator = torch.Generator(device=self.device)
        self._set_seed(seed)
        self._make_specs()

    def _make_specs(self) -> None:
        n, dev = self.batch_size[0], self.device
        self.observation_spec = Composite(
            observation=Unbounded((n, self.obs_dim), device=dev),
            raw_reward=Unbounded((n, 1), device=dev),
            penalty=Unbounded((n, 1), device=dev),
            shape=(n,),
            device=dev,
        )
        self.action_spec = Bounded(-1.0, 1.0, (n, self.act_dim), device=dev)
        self.reward_spec = Unbounded((n, 1), device=dev)
        flag = Categorical(2, (n, 1), dtype=torch.bool, device=dev)
        self.done_spec = Composite(
            done=flag, terminated=flag.clone(), truncated=flag.clone(), shape=(n,), device=dev
        )

    def _reset(self, tensordict: TensorDictBase | None = None, **kwargs) -> TensorDict:
        n = self.batch_size[0]
        given = None if tensordict is None else tensordict.get("observation", None)
        if given is None:
            raise ValueError(
                "PenalizedModelEnv has no initial-state distribution: pass start states as "
                "env.reset(TensorDict({'observation': starts}, batch_size=[N]))"
            )
        obs = given.to(self.device).clone()
        zeros = torch.zeros(n, 1, device=self.device)
        flags = torch.zeros(n, 1, dtype=torch.bool, device=self.device)
        return TensorDict(
            observation=obs,
            raw_reward=zeros,
            penalty=zeros.clone(),
            done=flags,
            terminated=flags.clone(),
            truncated=flags.clone(),
            batch_size=[n],
            device=self.device,
        )

    def _step(self, tensordict: TensorDictBase) -> TensorDict:
        obs, action = tensordict["observation"], tensordict["action"]  # [N, O], [N, A]
        partial = tensordict.get("_step", None)
        if partial is None or bool(partial.all()):
            return model_step(self.ensemble, obs, action, self.mdp, self.generator)
        # partial step (rollouts with break_when_all_done): only live rows hit the ensemble;
        # skipped rows keep their observation and done flags with zero reward, as EnvBase's skip does.
        rows = partial.reshape(-1).nonzero().squeeze(-1)
        stepped = model_step(self.ensemble, obs[rows], action[rows], self.mdp, self.generator)
        n = obs.shape[0]
        zeros = obs.new_zeros(n, 1)
        out = TensorDict(
            observation=obs.clone(),
            reward=zeros,
            raw_reward=zeros.clone(),
            penalty=zeros.clone(),
            batch_size=self.batch_size,
            device=self.device,
        )
        for key in ("terminated", "truncated", "done"):
            prev = tensordict.get(key, None)
            out[key] = (
                prev.clone() if prev is not None else torch.zeros(n, 1, dtype=torch.bool, device=obs.device)
            )
        out[rows] = stepped
        return out

    def _set_seed(self, seed: int | None) -> None:
        """Seed the env's generator; ``None`` draws a seed from torch's global RNG (reproducible under it)."""
        if seed is None:
            seed = int(torch.randint(0, 2**62, ()).item())
        self.generator.manual_seed(seed)
