"""MBPO-style branched model rollouts and the FIFO model buffer they fill (MOPO reference, section 1 step 4).

``ModelRollouts`` is the one owner of the rollout: the run's model MDP (``model_env.mdp.ModelMDP``: penalty,
lambda, reward mode, termination, h), this rank's share of the start states, the schedule (``RolloutSchedule``:
every ``rollout_freq`` SAC updates), the model buffer (FIFO, ``model_retain_epochs`` epochs of rollouts) and the
statistics of each rollout. It knows nothing of
Lightning: the policy and the update count are handed to it by the caller.

Every start row is stepped until it terminates or ``rollout_length`` steps pass; a row's terminal transition is
kept and the row stops there. Rows that are done stay in the env's batch but are masked out with
TorchRL's ``_step`` key, so only live rows reach the ensemble.

Buffer capacity, as the authors' code (MBPO's ``_reallocate_model_pool``, kept by MOPO)::

    rollouts_per_epoch = rollout_batch_size * epoch_length / model_train_freq
    model_steps_per_epoch = int(rollout_length * rollouts_per_epoch)
    new_pool_size = model_retain_epochs * model_steps_per_epoch

i.e. ``model_retain_epochs`` EPOCHS of rollouts. Ours is ``model_retain_epochs * ceil(updates_per_epoch /
rollout_freq) * h * share``: the rollouts one epoch can hold (our schedule counts updates across epochs, so
an epoch holds up to the ceiling) of this rank's share. With MOPO's settings (rollout_freq 1000 = epoch
1000) both are ``5 * h * 50,000``.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from tensordict import TensorDict, TensorDictBase
from torch import Tensor

from mopo_lightning.guards import assert_finite
from mopo_lightning.model_env.buffer import ModelBuffer
from mopo_lightning.model_env.env import EnsemblePredictor, PenalizedModelEnv
from mopo_lightning.model_env.mdp import ModelMDP
from mopo_lightning.model_env.settings import MOPOSettings
from mopo_lightning.transitions import NEXT_OBSERVATION, REWARD, TERMINATED, transitions

log = logging.getLogger(__name__)
logging.getLogger("torchrl").setLevel(logging.WARNING)

Policy = Callable[[TensorDictBase], TensorDictBase]
"""A TorchRL policy: reads ``observation``, writes ``action``."""


@torch.no_grad()
def branched_rollout(
    env: PenalizedModelEnv,
    policy: Policy,
    start_obs: Tensor,
    rollout_length: int,
) -> tuple[TensorDict, dict[str, Tensor]]:
    """Roll ``policy`` from ``start_obs`` [N, O] for up to ``rollout_length`` steps.

    Returns the transitions of rows alive at each step (batch [M], ``transitions.TRANSITION_KEYS``) and the
    per-transition diagnostics ``penalty``, ``raw_reward`` and ``penalized_reward`` ([M, 1] each).
    """
    n, device = start_obs.shape[0], start_obs.device
    td = env.reset(TensorDict({"observation": start_obs}, batch_size=[n], device=device))
    alive = torch.ones(n, dtype=torch.bool, device=device)
    kept, diagnostics = [], {"penalty": [], "raw_reward": [], "penalized_reward": []}
    for _ in range(rollout_length):
        td = policy(td)
        td.set("_step", alive.unsqueeze(-1))
        td = env.step(td)
        step = td[alive]
        nxt = step["next"]
        kept.append(transitions(step["observation"], step["action"], nxt["observation"], nxt["reward"],
                                terminated=nxt["terminated"]))
        diagnostics["penalty"].append(nxt["penalty"])
        diagnostics["raw_reward"].append(nxt["raw_reward"])
        diagnostics["penalized_reward"].append(nxt["reward"])
        alive = alive & ~td["next", "terminated"].reshape(n)
        if not alive.any():
            break
        td = TensorDict({"observation": td["next", "observation"]}, batch_size=[n], device=device)
    return torch.cat(kept), {k: torch.cat(v) for k, v in diagnostics.items()}


@dataclass(frozen=True)
class RolloutSchedule:
    """How many start states a rollout branches from, how often, and how many epochs of rollouts the buffer keeps:
    ``MOPOSettings``' fields of the same names, and the SAC updates an epoch holds."""

    rollout_batch_size: int
    rollout_freq: int
    model_retain_epochs: int
    updates_per_epoch: int | None = None
    """SAC updates per epoch (``data.updates_per_epoch``); None means ``rollout_freq``, one rollout per epoch."""

    @classmethod
    def from_settings(cls, mopo: MOPOSettings, updates_per_epoch: int | None) -> RolloutSchedule:
        return cls(mopo.rollout_batch_size, mopo.rollout_freq, mopo.model_retain_epochs, updates_per_epoch)

    @property
    def rollouts_per_epoch(self) -> int:
        """The rollouts one epoch can hold: ``ceil(updates_per_epoch / rollout_freq)`` (module docstring)."""
        return math.ceil((self.updates_per_epoch or self.rollout_freq) / self.rollout_freq)

    def share(self, rank: int, world_size: int) -> int:
        """``rank``'s start states per rollout: the ranks' shares of ``rollout_batch_size`` add up exactly."""
        return self.rollout_batch_size // world_size + int(rank < self.rollout_batch_size % world_size)


@dataclass
class RolloutStats:
    """What one rollout reports: scalars for ``rollout/*`` and per-transition tensors for histograms."""

    scalars: dict[str, float]
    tensors: dict[str, Tensor] = field(default_factory=dict)


class ModelRollouts:
    """Branched rollouts of the current policy into a FIFO model buffer; see the module docstring.

    Under DDP each rank rolls out its own share of ``rollout_batch_size`` (``RolloutSchedule.share``) and
    keeps its own buffer of ``model_retain_epochs * rollouts_per_epoch * h * share`` rows
    (``RolloutSchedule.rollouts_per_epoch``, module docstring). All randomness
    (start states, the env's seed, buffer sampling) comes from ``generator``, which the caller owns and checkpoints.
    """

    def __init__(self, start_states: Tensor, act_dim: int, mdp: ModelMDP, schedule: RolloutSchedule, *,
                 sample_size: int, generator: torch.Generator, rank: int = 0, world_size: int = 1) -> None:
        """
        Args:
            start_states: [M, O] real observations that rollouts branch from (uniformly drawn).
            act_dim: action size of the policy.
            mdp: the penalised model MDP the rollouts step (h: ``mdp.rollout_length``).
            schedule: start states per rollout, SAC updates between rollouts, epochs the buffer keeps.
            sample_size: model rows per ``sample()``.
            generator: the caller's generator (checkpointed by the caller).
            rank: this process's rank; world_size: the number of ranks.
        """
        self.start_states, self.act_dim, self.mdp, self.schedule = start_states, act_dim, mdp, schedule
        self.generator = generator
        self.share = schedule.share(rank, world_size)
        self.rollouts_per_epoch = schedule.rollouts_per_epoch
        self.sample_size = sample_size
        self.buffer = ModelBuffer(schedule.model_retain_epochs * self.rollouts_per_epoch * mdp.rollout_length
                                  * self.share)
        self.ensemble: EnsemblePredictor | None = None

    def __len__(self) -> int:
        """Rows in the model buffer."""
        return len(self.buffer)

    @property
    def capacity(self) -> int:
        return self.buffer.capacity

    def attach(self, ensemble: EnsemblePredictor) -> None:
        """Roll out through ``ensemble`` from now on."""
        self.ensemble = ensemble

    def due(self, updates: int) -> bool:
        """A rollout is due before update ``updates``: on the schedule, or whenever the buffer is empty."""
        return updates % self.schedule.rollout_freq == 0 or len(self.buffer) == 0

    @torch.no_grad()
    def rollout(self, policy: Policy, updates: int = 0, device: torch.device | str = "cpu") -> RolloutStats:
        """Branch h-step rollouts of ``policy`` from this rank's share of start states into the buffer.

        ``updates`` (SAC updates so far) only names the moment in a non-finite error.
        """
        if self.ensemble is None:
            raise RuntimeError("no dynamics attached: call attach(ensemble) before rolling out")
        n = self.share
        start_idx = torch.randint(self.start_states.shape[0], (n,), generator=self.generator)
        env = PenalizedModelEnv(self.ensemble.to(device), self.mdp, batch_size=n, obs_dim=self.start_states.shape[-1],
                                act_dim=self.act_dim, device=device,
                                seed=int(torch.randint(2**31 - 1, (1,), generator=self.generator)))
        data, diagnostics = branched_rollout(env, policy, self.start_states[start_idx].to(device),
                                             self.mdp.rollout_length)
        data = data.cpu()
        assert_finite(
            {"model prediction (next observation)": data[NEXT_OBSERVATION],
             "model prediction (penalised reward)": data[REWARD]},
            f"in the model rollout before SAC update {updates}",
        )
        self.buffer.extend(data)
        pen, raw, rew = (diagnostics[k] for k in ("penalty", "raw_reward", "penalized_reward"))
        scalars = {
            "rollout/start_states": float(n),
            "rollout/transitions": float(data.shape[0]),
            "rollout/termination_rate": float(data[TERMINATED].sum()) / n,
            "rollout/raw_reward_mean": float(raw.mean()),
            "rollout/penalized_reward_mean": float(rew.mean()),
            "rollout/penalty_mean": float(pen.mean()),
            "rollout/penalty_max": float(pen.max()),
            "rollout/model_buffer_size": float(len(self.buffer)),
            "rollout/real_size": float(self.start_states.shape[0]),
        }
        return RolloutStats(scalars, {k: v.cpu() for k, v in diagnostics.items()})

    def sample_index(self) -> Tensor:
        """``sample_size`` uniformly drawn buffer positions [sample_size] (from the caller's generator)."""
        return self.buffer.sample_index(self.sample_size, self.generator)

    def sample(self) -> TensorDict:
        """``sample_size`` rows of the model buffer, uniformly."""
        return self.buffer[self.sample_index()]

    # ------------------------------------------------------------------ checkpoint state
    def state_dict(self) -> dict:
        """The buffer's filled rows (not its capacity) and its writer position, as plain tensors.

        While the ring is filling, the rows are cloned: ``torch.save`` writes a view's whole storage, so the views
        ``buffer[:]`` returns would put the full preallocated ring in every checkpoint (measured: 211 MB instead
        of 87 MB at two of five retained HalfCheetah rollouts, and 0.6 s instead of ~0.25 s per epoch
        checkpoint). A full ring's views are its whole storage: they go as they are, with no copy.
        """
        n = len(self.buffer)
        if not n:
            return {}
        rows = self.buffer[:]
        return {
            "model_buffer": (rows if n == self.capacity else rows.clone()).to_dict(),  # plain tensors: weights_only
            "model_buffer_cursor": torch.tensor(self.buffer.cursor),
        }

    def load_state_dict(self, state: dict) -> None:
        """Refill the buffer; with the same layout the FIFO order and sampling continue exactly."""
        if "model_buffer" not in state:
            return
        rows = TensorDict.from_dict(state["model_buffer"], auto_batch_size=True, batch_dims=1)
        cursor = int(state["model_buffer_cursor"])
        if rows.shape[0] <= self.capacity:  # same layout and cursor: sampling continues exactly
            self.buffer.extend(rows)
            self.buffer.cursor = cursor % self.capacity
        else:  # e.g. a single-process checkpoint resumed on several ranks: keep the newest rows
            oldest_first = torch.cat([rows[cursor:], rows[:cursor]]) if cursor else rows
            log.warning("model buffer: keeping the newest %d of %d checkpointed rows (smaller "
                        "per-rank capacity)", self.capacity, rows.shape[0])
            self.buffer.extend(oldest_first[-self.capacity:])
