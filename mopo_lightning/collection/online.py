"""Online SAC behaviour data in D4RL's schema, checkpointed: the datasets of MOPO's OOD tasks.

Source: MOPO (Yu et al. 2020, arXiv 2005.13239) section 5.2 and reference section 8: each
out-of-distribution dataset is the whole replay buffer of an online SAC run on the standard task (1M
steps in the paper) trained on a behaviour reward (halfcheetah: velocity capped at 3; ant: forward
reward with contact cost). The agent is the project's own ``SACModule``, used standalone (its
``update`` and ``act``; no Trainer). Deviations, both from SAC's reference code rather than MOPO's
offline settings: target entropy -dim(A) by default (MOPO's -3 is for the offline stage), and a
warm-up of uniformly random actions (``start_steps``), as softlearning and SpinningUp do.

Loop: one env step, then ``updates_per_step`` SAC updates on uniform batches of the buffer so far.

Checkpoints: at the first episode end after every ``checkpoint_every`` steps the whole state goes to
``<path>.ckpt`` (temporary file, fsync, rename): SAC weights and optimiser states, the buffer so far
(infos included), and the states of torch's RNG, the collector's RNG and the env's RNG. They are
taken between episodes, so the env needs only its RNG state to go on, and a collection that was
killed and resumed writes exactly the file an uninterrupted one writes. ``path`` is written once, at
the end, by ``data.hdf5.write_hdf5`` (same schema and metadata style as ``collect``).
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from tensordict import TensorDict

from mopo_lightning.collection.recorder import InfoRecorder
from mopo_lightning.data.hdf5 import write_hdf5
from mopo_lightning.envs.rewards import REWARDS
from mopo_lightning.envs.tasks import Task, get_task
from mopo_lightning.envs.wrappers import RelabelReward, ensure_relabel_infos, make_env
from mopo_lightning.files import atomic_path, remove_stale_temps
from mopo_lightning.guards import CheckpointError, ConfigError, require_same
from mopo_lightning.policy.sac import SACModule
from mopo_lightning.progress import progress
from mopo_lightning.transitions import transitions


@dataclass
class SACCollectConfig:
    """Online SAC settings of ``mopo-lightning collect --policy sac`` (the ``sac:`` YAML section).

    Args:
        behaviour_reward: reward SAC trains on and the file stores: ``env`` (the env's own) or a name of
            ``envs.rewards.REWARDS`` (``halfcheetah-capped``, ``ant-forward``).
        start_steps: uniformly random actions for this many first steps (exploration warm-up).
        update_after: no SAC update before the buffer holds this many steps.
        updates_per_step: SAC updates per env step; fractions are spread evenly (0.25: one every 4 steps).
        batch_size: SAC batch size.
        hidden_dim: width of the actor's and critics' hidden layers.
        num_layers: hidden layers of actor and critics.
        lr: Adam learning rate of actor, critics and temperature.
        target_entropy: SAC's entropy target; None gives -dim(A).
        checkpoint_every: checkpoint at the first episode end after every this many steps.
        checkpoint: checkpoint file (default ``<path>.ckpt``); resumed from when it exists.
        keep_checkpoint: keep the checkpoint after the dataset is written (default: delete it).
        log_every_episodes: print a progress line every this many episodes (unless quiet).
    """

    behaviour_reward: str = "env"
    start_steps: int = 10_000
    update_after: int = 1_000
    updates_per_step: float = 1.0
    batch_size: int = 256
    hidden_dim: int = 256
    num_layers: int = 2
    lr: float = 3e-4
    target_entropy: float | None = None
    checkpoint_every: int = 10_000
    checkpoint: str | None = None
    keep_checkpoint: bool = False
    log_every_episodes: int = 10


# settings that do not change the data: a checkpoint resumes under other values of these
_FREE = ("checkpoint_every", "checkpoint", "keep_checkpoint", "log_every_episodes")


def collect_sac(
    task: str | Task,
    steps: int,
    path: str | Path,
    seed: int = 0,
    max_episode_steps: int | None = None,
    quiet: bool = False,
    sac: SACCollectConfig | None = None,
) -> Path:
    """Train SAC online in the real env and write its whole replay buffer as a D4RL-schema file.

    Resumes from ``sac.checkpoint`` (default ``<path>.ckpt``) when it exists. Uses one torch thread.
    The same arguments give the same file, also across a kill and resume.
    """
    torch.set_num_threads(1)
    return OnlineSACCollector(task, steps, path, seed, max_episode_steps, sac or SACCollectConfig(), quiet).run()


class OnlineSACCollector:
    """State of one online SAC collection: env, agent, buffer, RNGs; see the module docstring."""

    def __init__(self, task: str | Task, steps: int, path: str | Path, seed: int,
                 max_episode_steps: int | None, cfg: SACCollectConfig, quiet: bool) -> None:
        self.task, self.steps, self.path, self.seed, self.cfg = get_task(task), int(steps), Path(path), seed, cfg
        self.quiet = quiet
        if steps <= 0 or cfg.update_after < 1 or cfg.updates_per_step < 0:
            raise ConfigError("need steps > 0, update_after >= 1 and updates_per_step >= 0")
        if cfg.behaviour_reward != "env" and cfg.behaviour_reward not in REWARDS:
            raise ConfigError(f"behaviour_reward must be 'env' or one of {sorted(REWARDS)}")
        self.max_episode_steps = max_episode_steps
        env = ensure_relabel_infos(make_env(self.task,
            **({} if max_episode_steps is None else {"max_episode_steps": int(max_episode_steps)})))
        self.env = env if cfg.behaviour_reward == "env" else RelabelReward(env, cfg.behaviour_reward)
        self.ckpt = Path(cfg.checkpoint) if cfg.checkpoint else self.path.with_name(self.path.name + ".ckpt")

        torch.manual_seed(seed)
        o, a = self.task.obs_dim, self.task.act_dim
        self.agent = SACModule(o, a, hidden_dim=cfg.hidden_dim, num_layers=cfg.num_layers, actor_lr=cfg.lr,
                               critic_lr=cfg.lr, alpha_lr=cfg.lr,
                               target_entropy=-float(a) if cfg.target_entropy is None else cfg.target_entropy)
        self.optimizers = self.agent.standalone_optimizers()  # the Adams that update() steps (no Trainer)
        self.rng = np.random.default_rng(seed)
        sim = self.env.unwrapped
        n = self.steps
        self.buf: dict[str, np.ndarray] = {
            "observations": np.zeros((n, o), np.float32),
            "actions": np.zeros((n, a), np.float32),
            "rewards": np.zeros(n, np.float32),
            "terminals": np.zeros(n, bool),
            "timeouts": np.zeros(n, bool),
            "next_observations": np.zeros((n, o), np.float32),
            "infos/qpos": np.zeros((n, sim.data.qpos.size), np.float64),
            "infos/qvel": np.zeros((n, sim.data.qvel.size), np.float64),
        }
        self.infos = InfoRecorder(n)
        self.t, self.last_checkpoint, self.returns = 0, 0, []

    # ------------------------------------------------------------------ the loop
    def run(self) -> Path:
        """Collect (resuming when a checkpoint exists), write the file, drop the checkpoint."""
        remove_stale_temps(self.ckpt)  # a temporary file left by a kill during a save
        obs, _ = self.env.reset(seed=self.seed)
        if self.ckpt.exists():
            self.load()
            self._log(f"resumed from {self.ckpt} at step {self.t}")
            obs, _ = self.env.reset()  # the env RNG was restored: the same reset as without the stop
        sim, start, t0 = self.env.unwrapped, time.perf_counter(), self.t
        episode_return = 0.0
        with progress(self.steps, f"online SAC {self.task.name}", self.quiet) as advance:
            advance(self.t)
            while self.t < self.steps:
                i = self.t
                self.buf["infos/qpos"][i], self.buf["infos/qvel"][i] = sim.data.qpos, sim.data.qvel
                action = self._act(obs, i)
                next_obs, reward, terminated, truncated, info = self.env.step(action)
                for key, value in (("observations", obs), ("actions", action), ("rewards", reward),
                                   ("next_observations", next_obs), ("terminals", terminated),
                                   ("timeouts", truncated and not terminated)):
                    self.buf[key][i] = value
                self.infos.record(i, info["relabel"])
                self.t += 1
                for _ in range(self._updates_due(self.t)):
                    self.agent.update(self._batch(self.t))
                episode_return += float(reward)
                if self.t % 1000 == 0:
                    advance(1000)
                if not (terminated or truncated):
                    obs = next_obs
                    continue
                self.returns.append(episode_return)
                episode_return = 0.0
                if len(self.returns) % self.cfg.log_every_episodes == 0:
                    rate = (self.t - t0) / (time.perf_counter() - start)
                    self._log(f"step {self.t}/{self.steps}  episodes {len(self.returns)}  "
                              f"return {np.mean(self.returns[-self.cfg.log_every_episodes:]):.1f}  "
                              f"updates {int(self.agent.sac_updates)}  {rate:.0f} steps/s")
                if self.t - self.last_checkpoint >= self.cfg.checkpoint_every and self.t < self.steps:
                    self.save()
                obs, _ = self.env.reset()
        self.env.close()
        path = write_hdf5(self.path, {**self.buf, **self.infos.arrays()}, self._metadata())
        if not self.cfg.keep_checkpoint:
            self.ckpt.unlink(missing_ok=True)
        return path

    def _act(self, obs: np.ndarray, i: int) -> np.ndarray:
        if i < self.cfg.start_steps:
            return self.rng.uniform(-1.0, 1.0, self.task.act_dim).astype(np.float32)
        action = self.agent.act(torch.as_tensor(obs, dtype=torch.float32).unsqueeze(0))  # [1, A]
        return action[0].numpy().astype(np.float32)

    def _updates_due(self, n: int) -> int:
        """SAC updates after the n-th step: total(n) - total(n - 1), total(n) = floor((n - after + 1) * k)."""
        def total(m: int) -> int:
            return math.floor(max(0, m - self.cfg.update_after + 1) * self.cfg.updates_per_step)

        return total(n) - total(n - 1)

    def _batch(self, n: int) -> TensorDict:
        """A uniform batch of the first n rows, with TorchRL's keys (``docs/interfaces.md``)."""
        idx = self.rng.integers(0, n, size=self.cfg.batch_size)
        b = {k: torch.from_numpy(self.buf[k][idx]) for k in
             ("observations", "actions", "rewards", "terminals", "timeouts", "next_observations")}
        return transitions(b["observations"], b["actions"], b["next_observations"], b["rewards"],
                           terminated=b["terminals"], truncated=b["timeouts"])

    # ------------------------------------------------------------------ checkpoints
    def _identity(self) -> dict:
        """What defines the data: a checkpoint resumes only a collection with the same values."""
        cfg = {k: v for k, v in asdict(self.cfg).items() if k not in _FREE}
        return {"task": self.task.name, "steps": self.steps, "seed": self.seed,
                "max_episode_steps": self.max_episode_steps, **cfg}

    def save(self) -> None:
        """Write the whole state to ``self.ckpt`` atomically (temporary file, fsync, rename)."""
        self.last_checkpoint = self.t
        rows = {**{k: v[: self.t] for k, v in self.buf.items()}, **self.infos.arrays(self.t)}
        state = {
            "identity": json.dumps(self._identity()),
            "t": self.t,
            "returns": torch.tensor(self.returns, dtype=torch.float64),
            "agent": self.agent.state_dict(),
            "optimizers": [opt.state_dict() for opt in self.optimizers],
            "buffer": {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in rows.items()},
            "torch_rng": torch.get_rng_state(),
            "rng": json.dumps(self.rng.bit_generator.state),
            "env_rng": json.dumps(self.env.unwrapped.np_random.bit_generator.state),
        }
        with atomic_path(self.ckpt) as tmp:
            torch.save(state, tmp)

    def load(self) -> None:
        """Restore the state saved by ``save`` (refusing a checkpoint of a different collection)."""
        state = torch.load(self.ckpt, weights_only=True)
        require_same(json.loads(state["identity"]), self._identity(), CheckpointError,
                     f"{self.ckpt}: checkpoint of another collection", "delete it to start over")
        self.agent.load_state_dict(state["agent"])
        for opt, opt_state in zip(self.optimizers, state["optimizers"], strict=True):
            opt.load_state_dict(opt_state)
        self.t = self.last_checkpoint = int(state["t"])
        self.returns = state["returns"].tolist()
        infos = {}
        for key, value in state["buffer"].items():
            if key in self.buf:
                self.buf[key][: self.t] = value.numpy()
            else:
                infos[key] = value.numpy()
        self.infos.load(infos)
        torch.set_rng_state(state["torch_rng"])
        self.rng.bit_generator.state = json.loads(state["rng"])
        self.env.unwrapped.np_random.bit_generator.state = json.loads(state["env_rng"])

    # ------------------------------------------------------------------ output
    def _metadata(self) -> dict[str, str | int | float]:
        cfg = self.cfg
        return {
            "task": self.task.name,
            "env_id": self.task.env_id,
            "behavior_policy": "sac",
            "behaviour_reward": cfg.behaviour_reward,
            "seed": int(self.seed),
            "steps": self.steps,
            "max_episode_steps": int(self.max_episode_steps or self.env.spec.max_episode_steps or 0),
            "start_steps": int(cfg.start_steps),
            "updates_per_step": float(cfg.updates_per_step),
            "sac_updates": int(self.agent.sac_updates),
            "episodes": len(self.returns),
            "collector": "mopo_lightning.collection.online",
        }

    def _log(self, message: str) -> None:
        if not self.quiet:
            print(message, flush=True)
