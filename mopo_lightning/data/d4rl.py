"""D4RL-schema HDF5 files as a TensorDict of transitions (``transitions.transitions``).

Two modes (MOPO reference, section 6):

- ``"transitions"`` (default): every row, with the file's ``next_observations``; time-limit rows are
  kept as non-terminal (``truncated`` True). Files without ``next_observations`` (D4RL v0) fall back
  to the ``"qlearning"`` rows, since ``observations[i + 1]`` is then the only next observation.
  Without a ``timeouts`` key, ``truncated`` is all False.
- ``"qlearning"``: exactly D4RL's ``qlearning_dataset`` (d4rl/__init__.py, terminate_on_end=False):
  row i in 0..N-2 gets next observation ``observations[i + 1]``; rows at a time limit are dropped
  (``timeouts[i]``, or without that key step 999 of D4RL's episode counter, see ``infer_timeouts``);
  terminal rows are kept; the last row is never emitted; ``truncated`` is all False.

A file is refused as ``data.hdf5.read_arrays`` and ``data.validation.validate`` refuse it, in one line.
A variant task (``Task.relabel``, e.g. ``halfcheetah-jump``) gets its rewards recomputed from each row's
``actions`` and ``infos/*`` (MOPO reference section 8); everything else is read as for its base task.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from tensordict import TensorDict

from mopo_lightning.data.errors import DatasetError
from mopo_lightning.data.hdf5 import REQUIRED_KEYS, read_arrays
from mopo_lightning.data.validation import check_relabel_keys, validate
from mopo_lightning.envs.tasks import Task, get_task
from mopo_lightning.transitions import transitions

MODES = ("transitions", "qlearning")
D4RL_MAX_EPISODE_STEPS = 1000
"""``env._max_episode_steps`` of every D4RL MuJoCo task; drives the step-999 rule."""


def read_validated(path: str | Path, task: str | Task) -> dict:
    """The arrays ``load_dataset`` uses from ``path``, validated for ``task`` (see ``validate``)."""
    task = get_task(task)
    extra = task.relabel.keys if task.relabel is not None else ()
    data = read_arrays(path, REQUIRED_KEYS, optional=("next_observations", "timeouts", *extra))
    validate(path, data, task)
    return data


def infer_timeouts(terminals: np.ndarray, max_episode_steps: int = D4RL_MAX_EPISODE_STEPS) -> np.ndarray:
    """D4RL's time-limit rule for files without ``timeouts``: a bool flag per row.

    D4RL's counter (qlearning_dataset): a row is final when ``episode_step == max_episode_steps - 1``;
    a final row resets the counter to 0; a kept terminal row resets it to 0 and then counts itself, so
    the episode after a terminal starts at 1 (it is cut one row earlier). Vectorised: a loop over
    terminals only, never over rows.
    """
    n, last, period = len(terminals), max_episode_steps - 1, max_episode_steps
    final = np.zeros(n, dtype=bool)
    start, s0 = 0, 0  # first row of the current stretch and its counter value
    for k in np.flatnonzero(terminals):
        s_k = s0 + (k - start)
        if s_k >= last and (s_k - last) % period == 0:
            continue  # this terminal is itself a final row: dropped, counter goes on periodically
        final[start + last - s0 : k + 1 : period] = True
        start, s0 = k + 1, 1
    final[start + last - s0 :: period] = True
    return final


def _flags(data: dict, key: str, n: int) -> np.ndarray:
    return np.asarray(data[key]).reshape(n).astype(bool) if key in data else np.zeros(n, dtype=bool)


def load_dataset(path: str | Path, task: str | Task, mode: str = "transitions") -> TensorDict:
    """Read and validate a D4RL-schema HDF5 file into a transition TensorDict of batch size [N].

    Raises a one-line ``DatasetError`` naming the file and the fault for everything ``validate`` refuses
    (and for a file that is missing, a directory, not HDF5, or lacks keys).
    """
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    path, task = Path(path), get_task(task)
    data = read_validated(path, task)
    obs, act = data["observations"], data["actions"]
    n = obs.shape[0]

    terminals = _flags(data, "terminals", n)
    rewards = np.asarray(data["rewards"], dtype=np.float32).reshape(n)
    if task.relabel is not None:
        rewards = relabel_rewards(path, data, task)
    if mode == "transitions" and "next_observations" in data:
        rows = slice(None)
        next_obs = data["next_observations"]
        truncated = _flags(data, "timeouts", n)
    else:  # D4RL qlearning_dataset; also the transitions fallback without next_observations
        final = _flags(data, "timeouts", n) if "timeouts" in data else infer_timeouts(terminals)
        rows = np.flatnonzero(~final[: n - 1])
        next_obs = obs[rows + 1]
        truncated = np.zeros(n, dtype=bool)
        if rows.size == 0:
            raise DatasetError(f"{path}: empty dataset (no rows left in qlearning mode)")

    return transitions(
        observation=_f32(obs[rows]),
        action=_f32(act[rows]),
        next_observation=_f32(next_obs),
        reward=_f32(rewards[rows]),
        terminated=torch.from_numpy(terminals[rows]),
        truncated=torch.from_numpy(truncated[rows]),
    )


def relabel_rewards(path: Path, data: dict, task: Task) -> np.ndarray:
    """A variant task's rewards [N] (float32), recomputed from each row's ``actions`` and ``infos/*``."""
    check_relabel_keys(path, data, task)
    rewards = task.relabel(data).astype(np.float32)
    if not np.isfinite(rewards).all():
        raise DatasetError(f"{path}: relabelled {task.name} rewards hold NaN or inf values")
    return rewards


def _f32(array: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(array, dtype=np.float32))


def episode_ends(path: str | Path, optional: tuple[str, ...] = ()) -> tuple[np.ndarray, dict]:
    """Episode-end flags per row (terminals | timeouts, or D4RL's step rule) and the raw arrays.

    ``optional``: further keys read in the same pass where present (a variant task's reward inputs).
    """
    data = read_arrays(path, ("rewards", "terminals"), optional=("timeouts", *optional))
    n = data["rewards"].shape[0]
    terminals = _flags(data, "terminals", n)
    timeouts = _flags(data, "timeouts", n) if "timeouts" in data else infer_timeouts(terminals)
    return terminals | timeouts, {**data, "terminals": terminals, "timeouts": timeouts}
