"""Minari datasets (Farama's ``mujoco/<env>/<quality>-v0``, collected on the gymnasium v5 envs) as transitions.

Which source a name means is decided by ``data.source.dataset_source`` (a Minari id is
``namespace/name/quality-vN``). A Minari id is read through the ``minari`` package:

- from the local Minari store, ``$MINARI_DATASETS_PATH`` or Minari's default ``~/.minari/datasets``;
- else downloaded through Minari's own API (``minari.download_dataset``, with its progress bars), once a
  ``mujoco/<env>/<quality>-vN`` id names a known robot and quality (``check_farama_id``);
- offline, one ``DatasetDownloadError`` line names the id, the store and the ``minari download <id>``
  command to run where there is internet.

Episodes become the project's transition TensorDict (``transitions.transitions``): Minari stores
``observations`` with T + 1 rows and ``actions``/``rewards``/``terminations``/``truncations`` with T rows, so
row t has next observation ``observations[t + 1]``; ``terminated`` is Minari's ``terminations`` and
``truncated`` its ``truncations``, kept distinct. The arrays go through the same ``validation.validate`` as a
D4RL file (finite values, the magnitude bound, sizes that fit the task, 0/1 flags), one line per fault.

The task is the dataset's own (``dataset_task``): env id and kwargs from the recorded env spec, sizes from
its spaces, the termination function of the recorded health ranges, and the dataset's ``ref_min_score`` and
``ref_max_score`` (NaN without them). ``Task.normalized_score`` is then ``100 *
minari.get_normalized_score`` (Minari's is a fraction, ours a percentage, as D4RL's).
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from tensordict import TensorDict

from mopo_lightning.data.errors import DatasetDownloadError, DatasetError, UnknownDataset, one_line
from mopo_lightning.data.source import minari_data_dir
from mopo_lightning.data.validation import validate
from mopo_lightning.envs.tasks import ROBOTS, TASKS, Task, get_task, task_from_env_spec
from mopo_lightning.guards import closest
from mopo_lightning.transitions import transitions

if TYPE_CHECKING:
    from minari import MinariDataset

FARAMA_QUALITIES = ("expert", "medium", "simple")  # of Farama's mujoco/<env>/<quality>-v0 datasets


def store_dir() -> Path:
    """The local Minari store: ``$MINARI_DATASETS_PATH``, else ``~/.minari/datasets`` (as Minari itself)."""
    root = os.environ.get("MINARI_DATASETS_PATH")
    return Path(root).expanduser() if root else Path.home() / ".minari" / "datasets"


def local_data_dir(dataset_id: str) -> Path | None:
    """The ``data`` directory of ``dataset_id`` in the local store, or None if it is not there."""
    data = store_dir() / dataset_id / "data"
    return data if (data / "metadata.json").is_file() else None


def open_dataset(name_or_path: str | Path, download: bool = True) -> MinariDataset:
    """A ``MinariDataset`` from an id (local store, else downloaded) or a dataset directory on disk."""
    import minari

    on_disk = minari_data_dir(name_or_path) if Path(str(name_or_path)).expanduser().exists() else None
    if on_disk is not None:
        return _read(lambda: minari.MinariDataset(on_disk), str(on_disk))
    dataset_id = str(name_or_path).strip()
    if local_data_dir(dataset_id) is None:
        check_farama_id(dataset_id)
        if not download:
            raise DatasetDownloadError(_offline(dataset_id, "downloads are off"))
        try:
            minari.download_dataset(dataset_id)
        except Exception as err:  # offline, unknown id, server error: one line either way
            raise DatasetDownloadError(_offline(dataset_id, f"{type(err).__name__}: {one_line(err)[:300]}")) from None
    return _read(lambda: minari.load_dataset(dataset_id), dataset_id)


def check_farama_id(dataset_id: str) -> None:
    """A ``mujoco/<env>/<quality>-vN`` id of a robot not in ``envs.tasks.ROBOTS`` or a quality not in
    ``FARAMA_QUALITIES``
    is one ``UnknownDataset`` line (exit 2) with the closest id; other ids pass (``minari`` knows them)."""
    parts = dataset_id.split("/")
    if len(parts) != 3 or parts[0] != "mujoco" or "-" not in parts[2]:
        return
    (quality, version), robots = parts[2].rsplit("-", 1), sorted(ROBOTS.values())
    if parts[1] not in robots or quality not in FARAMA_QUALITIES:
        env, good = closest(parts[1], robots) or parts[1], closest(quality, FARAMA_QUALITIES) or quality
        hint = f" (did you mean mujoco/{env}/{good}-{version}?)" if env in robots and good in FARAMA_QUALITIES else ""
        raise UnknownDataset(f"unknown Minari dataset {dataset_id!r}{hint}; known: mujoco/ENV/QUALITY-{version}, ENV "
                             f"one of {', '.join(robots)}, QUALITY one of {', '.join(FARAMA_QUALITIES)}")


def _offline(dataset_id: str, why: str) -> str:
    return (f"{dataset_id}: not in the local Minari store {store_dir()} and not downloaded ({why}); "
            f"run `minari download {dataset_id}` where there is internet and copy {store_dir() / dataset_id} "
            "here (or point MINARI_DATASETS_PATH at a store that has it)")


def _read(load, label: str) -> MinariDataset:
    try:
        return load()
    except (OSError, ValueError, KeyError, TypeError, AssertionError) as err:
        raise DatasetError(f"{label}: not a readable Minari dataset ({type(err).__name__}: {one_line(err)[:300]})") \
            from None


def dataset_file(dataset: MinariDataset) -> Path:
    """The one file that stands for the dataset (its HDF5 data, else its metadata): fingerprints, results."""
    data = Path(dataset.spec.data_path)
    main = data / "main_data.hdf5"
    return main if main.is_file() else data / "metadata.json"


def reference_scores(dataset: MinariDataset) -> tuple[float | None, float | None]:
    """The dataset's ``ref_min_score`` and ``ref_max_score`` (those ``minari.get_normalized_score`` uses)."""
    metadata = dataset.storage.metadata
    low, high = metadata.get("ref_min_score"), metadata.get("ref_max_score")
    if low is None or high is None:
        return None, None
    return float(low), float(high)


def score_reference(dataset: MinariDataset) -> str:
    """``"minari:<id>"`` when the dataset has reference scores, else ``"none"``."""
    return f"minari:{dataset.spec.dataset_id}" if reference_scores(dataset)[0] is not None else "none"


def dataset_task(dataset: MinariDataset, task: str | Task | None = None) -> Task:
    """The task the dataset defines (module docstring); ``task``, when given, must be of the same robot.

    Where the env's defaults differ from what the data used, the recorded spec wins: a ``hopper`` (v4)
    task given for v5 data still evaluates on the recorded Hopper-v5.
    """
    label = dataset.spec.dataset_id
    obs_space, act_space = dataset.spec.observation_space, dataset.spec.action_space
    if getattr(obs_space, "shape", None) is None or len(obs_space.shape) != 1 or len(act_space.shape or ()) != 1:
        raise DatasetError(f"{label}: needs flat Box observations and actions, got {obs_space} and {act_space}")
    given = get_task(task) if task is not None else None
    if given is not None and given.relabel is not None:
        raise DatasetError(f"{label}: task {given.name} relabels rewards from D4RL-file infos; "
                           "Minari data serves the standard tasks only")
    low, high = reference_scores(dataset)
    spec = dataset.spec.env_spec
    if spec is None:
        if given is None:
            raise DatasetError(f"{label}: the dataset records no env spec; pass --data.task")
        env_id, kwargs = given.env_id, given.env_kwargs
    else:
        env_id, kwargs = spec.id, dict(spec.kwargs)
    try:
        own = task_from_env_spec(env_id.lower(), env_id, kwargs, obs_space.shape[0], act_space.shape[0],
                                 low, high)  # the registry's name: Hopper-v5 -> hopper-v5
    except ValueError as err:
        raise DatasetError(f"{label}: {err}") from None
    if given is not None and _robot(given.env_id) != _robot(own.env_id):
        raise DatasetError(f"{label}: recorded on {own.env_id}; task {given.name} ({given.env_id}) does not fit")
    return own


def _robot(env_id: str) -> str:
    return env_id.split("-")[0]


def read_arrays(dataset: MinariDataset) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Episodes concatenated in D4RL's names (``observations``, ``next_observations``, ``terminals`` for
    ``terminations``, ``timeouts`` for ``truncations``) and the episode lengths."""
    label = dataset.spec.dataset_id
    parts: dict[str, list[np.ndarray]] = {k: [] for k in ("observations", "next_observations", "actions",
                                                          "rewards", "terminals", "timeouts")}
    lengths = []
    for episode in dataset.iterate_episodes():
        obs = np.asarray(episode.observations)
        steps = len(episode.rewards)
        if obs.ndim != 2 or obs.shape[0] != steps + 1:
            raise DatasetError(f"{label}: episode {episode.id} has observations of shape {obs.shape} for "
                               f"{steps} steps (Minari stores T + 1 rows)")
        parts["observations"].append(obs[:-1])
        parts["next_observations"].append(obs[1:])
        parts["actions"].append(np.asarray(episode.actions).reshape(steps, -1))
        parts["rewards"].append(np.asarray(episode.rewards).reshape(steps))
        parts["terminals"].append(np.asarray(episode.terminations).reshape(steps))
        parts["timeouts"].append(np.asarray(episode.truncations).reshape(steps))
        lengths.append(steps)
    if not lengths:
        raise DatasetError(f"{label}: empty dataset (0 episodes)")
    return {k: np.concatenate(v) for k, v in parts.items()}, np.asarray(lengths, dtype=np.int64)


def load_minari(dataset: MinariDataset | str, task: str | Task | None = None) -> TensorDict:
    """A Minari dataset (or id) as a validated transition TensorDict [N] for ``task`` (default: its own)."""
    if not hasattr(dataset, "iterate_episodes"):
        dataset = open_dataset(dataset)
    task = _task_of(dataset, task)
    data, _ = read_arrays(dataset)
    validate(dataset.spec.dataset_id, data, task)
    return transitions(
        observation=_f32(data["observations"]),
        action=_f32(data["actions"]),
        next_observation=_f32(data["next_observations"]),
        reward=_f32(data["rewards"]),
        terminated=torch.from_numpy(data["terminals"].astype(bool)),
        truncated=torch.from_numpy(data["timeouts"].astype(bool)),
    )


def _task_of(dataset: MinariDataset, task: str | Task | None) -> Task:
    """A task built already (``dataset_task``'s, a caller's own) as it is; a name or registry task checked."""
    if isinstance(task, Task) and TASKS.get(task.name) is not task:
        return task
    return dataset_task(dataset, task)


def _f32(array: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(array, dtype=np.float32))


def summarize_minari(name_or_path: str | Path, task: str | Task | None = None) -> dict[str, Any]:
    """``data info`` for a Minari dataset: transitions, episodes, returns, scores with its own references."""
    dataset = open_dataset(name_or_path)
    task = _task_of(dataset, task)
    data, lengths = read_arrays(dataset)
    validate(dataset.spec.dataset_id, data, task)  # the same validation as load_minari (fit)
    rewards = np.asarray(data["rewards"], dtype=np.float64)
    returns = np.add.reduceat(rewards, np.cumsum(lengths) - lengths)  # Minari's episodes are stored whole
    terminals, timeouts = data["terminals"].astype(bool), data["timeouts"].astype(bool)

    def stats(x: np.ndarray) -> dict[str, float | None]:
        return {"mean": float(x.mean()), "std": float(x.std()), "min": float(x.min()), "max": float(x.max())}

    scored = task.has_reference_scores
    metadata = {k: v for k, v in dataset.storage.metadata.items()
                if isinstance(v, (str, int, float, bool)) and k not in ("env_spec", "eval_env_spec")}
    return {
        "file": str(Path(dataset.spec.data_path)),
        "dataset_id": dataset.spec.dataset_id,
        "task": task.name,
        "env_id": task.env_id,
        "transitions": int(rewards.size),
        "observation_dim": int(data["observations"].shape[1]),
        "action_dim": int(data["actions"].shape[1]),
        "episodes": int(returns.size),
        "partial_last_episode": False,
        "terminals": int(terminals.sum()),
        "timeouts": int(timeouts.sum()),
        "timeouts_key": True,
        "next_observations_key": True,
        "episode_length": stats(lengths.astype(np.float64)),
        "return": stats(returns),
        "normalized_score": {
            "mean": float(task.normalized_score(returns.mean())) if scored else None,
            "max": float(task.normalized_score(returns.max())) if scored else None,
        },
        "score_reference": score_reference(dataset) if scored else "none",
        "reward": stats(rewards),
        "metadata": metadata,
    }


def write_minari(
    dataset_id: str,
    episodes: list[dict[str, np.ndarray]],
    env_spec: Any,
    ref_min_score: float | None = None,
    ref_max_score: float | None = None,
    algorithm_name: str | None = None,
) -> MinariDataset:
    """Write episodes (``observations`` [T + 1, O], ``actions``, ``rewards``, ``terminations``,
    ``truncations`` [T]) as a Minari dataset in the local store, through ``minari.create_dataset_from_buffers``.

    With ``ref_max_score`` alone, Minari measures ``ref_min_score`` itself (a random policy, 100 episodes).
    """
    import gymnasium as gym
    import minari
    import mujoco
    from minari.data_collector import EpisodeBuffer

    if ref_min_score is not None and ref_max_score is None:
        raise ValueError("ref_min_score needs ref_max_score (Minari records both or neither)")
    if local_data_dir(dataset_id) is not None or (store_dir() / dataset_id).exists():
        raise ValueError(f"{dataset_id}: already in the Minari store {store_dir()}; pick another id or version")
    buffers = [
        EpisodeBuffer(id=i, observations=ep["observations"], actions=ep["actions"], rewards=ep["rewards"],
                      terminations=ep["terminations"], truncations=ep["truncations"], infos={})
        for i, ep in enumerate(episodes)
    ]
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=UserWarning, module=r"minari\..*")  # code_permalink etc.
        return minari.create_dataset_from_buffers(
            dataset_id,
            buffers,
            env=env_spec,
            algorithm_name=algorithm_name,
            author="mopo-lightning collect",
            description="Behaviour data collected in the real MuJoCo env by mopo_lightning.collection.collect",
            ref_min_score=ref_min_score,
            ref_max_score=ref_max_score,
            requirements=[f"gymnasium>={gym.__version__}", f"mujoco>={mujoco.__version__}"],
            data_format="hdf5",
        )
