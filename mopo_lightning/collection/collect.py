"""Behaviour-data collection in the real MuJoCo env, written in D4RL's HDF5 schema.

The files match D4RL's layout (MOPO reference, section 6) so that the loader, the summary and any
D4RL tooling read them alike:

- ``observations`` [N, O] f32, ``actions`` [N, A] f32, ``rewards`` [N] f32, ``next_observations`` [N, O] f32;
- ``terminals`` [N] bool: the env's own ``terminated`` (the robot fell);
- ``timeouts`` [N] bool: the time limit ended the episode (``truncated`` and not ``terminated``; a row
  that is both counts as a terminal, so no row carries two flags);
- ``infos/qpos``, ``infos/qvel`` [N, *] f64: the simulator state BEFORE step i, i.e. the state that
  ``observations[i]`` shows, so ``set_state(qpos[i], qvel[i]); step(actions[i])`` replays row i;
- ``infos/x_velocity``, ``infos/y_velocity``, ``infos/torso_height``, ``infos/torso_height_at_reset`` [N]
  f64 (after step i), and for Ant ``infos/contact_forces`` [N, 84] f32 (clipped to [-1, 1]): what the
  out-of-distribution rewards need to relabel row i (``envs/rewards.py``, MOPO reference section 8);
- ``metadata/*``: scalar datasets (task, env_id, behavior_policy, seed, steps, max_episode_steps, collector),
  strings stored the way D4RL stores ``metadata/algorithm``.

If the step budget ends mid-episode the last row carries no flag, as in D4RL's own files.

``format="minari"`` writes the same steps as a Minari dataset (``data.minari.write_minari``, through
``minari.create_dataset_from_buffers``) into the local Minari store (``$MINARI_DATASETS_PATH``) under
``dataset_id``, with the env's spec (id, kwargs, time limit) and the reference scores given. One Minari
episode per env episode: ``observations`` [T + 1] (reset observation, then every next observation),
``terminations`` the env's ``terminated``, ``truncations`` its ``truncated``; an episode cut by the step
budget ends truncated (Minari's episodes have an end). No infos are stored in that format.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Literal

import numpy as np

from mopo_lightning.collection.recorder import InfoRecorder
from mopo_lightning.data.hdf5 import write_hdf5
from mopo_lightning.envs.tasks import Task, get_task
from mopo_lightning.envs.wrappers import RelabelInfos, ensure_relabel_infos, make_env
from mopo_lightning.progress import progress

Policy = Callable[[np.ndarray], np.ndarray]
"""observation [O] -> action [A]."""

POLICIES = ("random", "falling")


class FallingPolicy:
    """Bang-bang actions (every joint at +-1) held for a few steps: the robots fall over often.

    Used to make datasets dense in terminations (the termination test needs many). Holding each
    random corner of the action box for 3 steps made Hopper, Walker2d and Ant fall the most often of
    the hold lengths we tried (1, 3, 8, 20): ~400, ~390 and ~170 falls per 5,000 steps.
    """

    def __init__(self, act_dim: int, seed: int = 0, hold: int = 3) -> None:
        self.rng = np.random.default_rng(seed)
        self.act_dim, self.hold, self.t = act_dim, hold, 0
        self.action = np.zeros(act_dim, dtype=np.float32)

    def __call__(self, obs: np.ndarray) -> np.ndarray:
        if self.t % self.hold == 0:
            self.action = self.rng.choice(np.array([-1.0, 1.0], dtype=np.float32), size=self.act_dim)
        self.t += 1
        return self.action


def make_policy(policy: str | Policy, env, seed: int) -> Policy:
    """A callable policy from a name ("random", "falling") or a callable (returned as is)."""
    if callable(policy):
        return policy
    if policy == "random":
        env.action_space.seed(seed)
        return lambda obs: env.action_space.sample()
    if policy == "falling":
        return FallingPolicy(env.action_space.shape[0], seed=seed)
    raise ValueError(f"unknown policy {policy!r}; use one of {POLICIES} or a callable obs -> action")


def collect(
    task: str | Task,
    steps: int,
    path: str | Path | None = None,
    policy: str | Policy = "random",
    seed: int = 0,
    max_episode_steps: int | None = None,
    quiet: bool = False,
    format: Literal["d4rl", "minari"] = "d4rl",
    dataset_id: str | None = None,
    ref_min_score: float | None = None,
    ref_max_score: float | None = None,
) -> Path:
    """Run a behaviour policy in the real MuJoCo env and write a D4RL-schema HDF5 file (or a Minari dataset).

    Args:
        task: task name (hopper, walker2d, halfcheetah, ant, hopper-v5, ...) or a D4RL name such as
            ``hopper-random-v2``.
        steps: number of transitions to record.
        path: output HDF5 file (format d4rl); written to a temporary file and renamed into place when complete.
        policy: "random" (uniform actions), "falling" (bang-bang, robots fall often) or a callable
            obs -> action.
        seed: seeds the env and the built-in policies; the same arguments give the same file.
        max_episode_steps: time limit of an episode (default: the env's 1000); shorter limits put
            timeouts into small files.
        quiet: hide the progress bar.
        format: ``d4rl`` (an HDF5 file at ``path``) or ``minari`` (a Minari dataset in the local Minari
            store, ``$MINARI_DATASETS_PATH`` or ``~/.minari/datasets``, under ``dataset_id``).
        dataset_id: Minari dataset id for format minari, e.g. ``local/hopper/random-v0``.
        ref_min_score: Minari reference return of a random policy (normalised score 0); format minari.
        ref_max_score: Minari reference return of an expert (score 100); alone, Minari measures
            ``ref_min_score`` itself with 100 random-policy episodes. Neither: the dataset has no scores.

    Returns:
        The path of the written file (format minari: the dataset's directory in the store).
    """
    task = get_task(task)
    if steps <= 0:
        raise ValueError(f"steps must be positive, got {steps}")
    if format not in ("d4rl", "minari"):
        raise ValueError(f"format must be d4rl or minari, got {format!r}")
    if format == "minari":
        if dataset_id is None or path is not None:
            raise ValueError("format minari writes into the Minari store: give dataset_id (e.g. "
                             "local/hopper/random-v0) and no path")
        if task.relabel is not None:
            raise ValueError(f"format minari stores no infos, which task {task.name} relabels rewards from")
    elif path is None:
        raise ValueError("format d4rl needs path (the HDF5 file to write)")
    elif dataset_id is not None or ref_min_score is not None or ref_max_score is not None:
        raise ValueError("dataset_id, ref_min_score and ref_max_score are for format minari")
    env_kwargs = {} if max_episode_steps is None else {"max_episode_steps": int(max_episode_steps)}
    env = ensure_relabel_infos(make_env(task, **env_kwargs))
    sim = env.unwrapped
    pi = make_policy(policy, env, seed)

    obs_dim, act_dim = task.obs_dim, task.act_dim
    obs_buf = np.empty((steps, obs_dim), np.float32)
    next_buf = np.empty((steps, obs_dim), np.float32)
    act_buf = np.empty((steps, act_dim), np.float32)
    rew_buf = np.empty(steps, np.float32)
    term_buf = np.zeros(steps, bool)
    timeout_buf = np.zeros(steps, bool)
    qpos_buf = np.empty((steps, sim.data.qpos.size), np.float64)
    qvel_buf = np.empty((steps, sim.data.qvel.size), np.float64)
    infos = InfoRecorder(steps)

    obs, _ = env.reset(seed=seed)
    with progress(steps, f"collect {task.name}", quiet) as advance:
        for i in range(steps):
            qpos_buf[i], qvel_buf[i] = sim.data.qpos, sim.data.qvel
            # Cast before stepping so that the stored action is exactly the one the env received.
            action = np.asarray(pi(obs), dtype=np.float32).reshape(act_dim)
            next_obs, reward, terminated, truncated, info = env.step(action)
            infos.record(i, info["relabel"])
            obs_buf[i], act_buf[i], next_buf[i], rew_buf[i] = obs, action, next_obs, reward
            term_buf[i] = terminated
            timeout_buf[i] = truncated and not terminated
            obs = env.reset()[0] if (terminated or truncated) else next_obs
            if (i + 1) % 1000 == 0:
                advance(1000)
    env.close()
    if format == "minari":
        return _write_minari(task, env, dataset_id, obs_buf, act_buf, rew_buf, next_buf, term_buf, timeout_buf,
                             policy, ref_min_score, ref_max_score)
    path = Path(path)
    # Like D4RL: an episode cut by the end of the budget carries no flag on its last row. The env may
    # still have raised one on that row by itself (a fall or the time limit exactly there): kept.

    metadata = {
        "task": task.name,
        "env_id": task.env_id,
        "behavior_policy": policy
        if isinstance(policy, str)
        else getattr(policy, "__name__", type(policy).__name__),
        "seed": int(seed),
        "steps": int(steps),
        "max_episode_steps": int(max_episode_steps or env.spec.max_episode_steps or 0),
        "collector": "mopo_lightning.collection.collect",
    }
    arrays = {
        "observations": obs_buf,
        "actions": act_buf,
        "rewards": rew_buf,
        "terminals": term_buf,
        "timeouts": timeout_buf,
        "next_observations": next_buf,
        "infos/qpos": qpos_buf,
        "infos/qvel": qvel_buf,
        **infos.arrays(),
    }
    return write_hdf5(path, arrays, metadata)


def _write_minari(task: Task, env, dataset_id: str, obs, act, rew, next_obs, term, timeout, policy,
                  ref_min_score: float | None, ref_max_score: float | None) -> Path:
    """The collected steps as Minari episodes in the local store (module docstring)."""
    from mopo_lightning.data.minari import store_dir, write_minari

    ends = np.flatnonzero(term | timeout)
    if ends.size == 0 or ends[-1] != len(rew) - 1:
        ends = np.append(ends, len(rew) - 1)  # cut by the budget: that episode ends truncated
    episodes, start = [], 0
    for end in ends:
        rows = slice(start, end + 1)
        truncations = timeout[rows].copy()
        truncations[-1] |= not term[end]
        episodes.append({
            "observations": np.concatenate([obs[rows], next_obs[end : end + 1]]),
            "actions": act[rows], "rewards": rew[rows],
            "terminations": term[rows], "truncations": truncations,
        })
        start = end + 1
    name = policy if isinstance(policy, str) else getattr(policy, "__name__", type(policy).__name__)
    inner = env
    while isinstance(inner, RelabelInfos):  # the gym.make env's spec: id, kwargs and its time limit
        inner = inner.env
    write_minari(dataset_id, episodes, inner.spec, ref_min_score, ref_max_score, algorithm_name=name)
    return store_dir() / dataset_id
