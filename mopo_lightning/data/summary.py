"""Dataset summary behind ``mopo-lightning data info FILE [--task T] [--json]`` (``commands/data_info.py``).

Episodes are split after every row flagged ``terminals`` or ``timeouts`` (for files without
``timeouts``, D4RL's step-999 rule, see ``d4rl.infer_timeouts``). A trailing episode cut by the end of
the file counts as an episode, and ``partial_last_episode`` says so. Returns are undiscounted sums
of the behaviour rewards; their normalised scores use D4RL's reference returns.

The file is validated for the task exactly as ``fit`` does (``d4rl.read_validated``, the same
``validate``): a file that training refuses, ``data info`` refuses with the same message.

A Minari id or a Minari dataset on disk (``data.source.dataset_source``) is summarised by
``data.minari.summarize_minari``: the same fields, episodes as Minari stores them, normalised scores with
the dataset's own reference returns.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import h5py
import numpy as np

from mopo_lightning.data.d4rl import infer_timeouts, read_validated
from mopo_lightning.data.errors import DatasetError, one_line
from mopo_lightning.data.hdf5 import check_file
from mopo_lightning.data.source import dataset_source
from mopo_lightning.envs.tasks import Task, get_task


def file_metadata(path: str | Path) -> dict[str, Any]:
    """The ``metadata/*`` scalars of a file (D4RL's and the collector's), strings decoded."""
    out: dict[str, Any] = {}
    try:
        f = h5py.File(path, "r")
    except OSError as err:
        raise DatasetError(f"{path}: not a readable HDF5 file ({one_line(err)})") from None
    with f:
        group = f.get("metadata")
        if isinstance(group, h5py.Group):
            for key, ds in group.items():
                if isinstance(ds, h5py.Dataset) and ds.shape == ():
                    value = ds[()]
                    out[key] = value.decode() if isinstance(value, bytes) else np.asarray(value).item()
    return out


def episode_returns(rewards: np.ndarray, ends: np.ndarray) -> tuple[np.ndarray, np.ndarray, bool]:
    """Per-episode (returns, lengths, partial_last): episodes end after rows where ``ends`` is set."""
    n = rewards.shape[0]
    stops = np.flatnonzero(ends) + 1  # exclusive end of each complete episode
    partial = n > 0 and (stops.size == 0 or stops[-1] < n)
    bounds = np.concatenate([[0], stops, [n] if partial else []]).astype(np.int64)
    sums = np.concatenate([[0.0], np.cumsum(rewards, dtype=np.float64)])
    return sums[bounds[1:]] - sums[bounds[:-1]], np.diff(bounds), bool(partial)


def summarize(path: str | Path, task: str | Task | None = None) -> dict[str, Any]:
    """Transitions, episodes, return statistics and normalised scores of a D4RL-schema file.

    ``task`` defaults to the file's ``metadata/task``, then to the task named by the file name. A Minari id or
    dataset directory goes to ``data.minari.summarize_minari`` (task: the dataset's own env).
    """
    if dataset_source(path) == "minari":
        from mopo_lightning.data.minari import summarize_minari

        return summarize_minari(path, task)
    path = check_file(path)
    metadata = file_metadata(path)
    task = _pick_task(path, task, metadata)
    data = read_validated(path, task)  # the same validation as load_dataset (fit)
    n = data["observations"].shape[0]
    terminals = np.asarray(data["terminals"]).reshape(n).astype(bool)
    has_timeouts = "timeouts" in data
    timeouts = np.asarray(data["timeouts"]).reshape(n).astype(bool) if has_timeouts else infer_timeouts(terminals)
    ends = terminals | timeouts
    rewards = np.asarray(data["rewards"], dtype=np.float64).reshape(-1)
    returns, lengths, partial = episode_returns(rewards, ends)
    obs_shape, act_shape = data["observations"].shape, data["actions"].shape
    has_next = "next_observations" in data

    def stats(x: np.ndarray) -> dict[str, float | None]:
        if x.size == 0:
            return {"mean": None, "std": None, "min": None, "max": None}
        return {"mean": float(x.mean()), "std": float(x.std()), "min": float(x.min()), "max": float(x.max())}

    return {
        "file": str(path),
        "task": task.name,
        "transitions": int(rewards.size),
        "observation_dim": obs_shape[1],
        "action_dim": act_shape[1],
        "episodes": int(returns.size),
        "partial_last_episode": partial,
        "terminals": int(terminals.sum()),
        "timeouts": int(timeouts.sum()),
        "timeouts_key": has_timeouts,
        "next_observations_key": has_next,
        "episode_length": stats(lengths.astype(np.float64)),
        "return": stats(returns),
        "normalized_score": {
            "mean": float(task.normalized_score(returns.mean())) if returns.size else None,
            "max": float(task.normalized_score(returns.max())) if returns.size else None,
        },
        "reward": stats(rewards),
        "metadata": metadata,
    }


def _pick_task(path: Path, task: str | Task | None, metadata: dict[str, Any]) -> Task:
    if task is not None:
        return get_task(task)
    for candidate in (metadata.get("task"), path.name):
        try:
            return get_task(str(candidate))
        except KeyError:
            pass
    raise DatasetError(f"{path}: no task given and none in metadata/task or the file name; pass --task")


def print_summary(summary: dict[str, Any], name: str) -> None:
    """``summary`` (``summarize``'s) as a table on the terminal, titled with the file's ``name``."""
    from rich.console import Console
    from rich.table import Table

    def fmt(value: Any) -> str:
        if isinstance(value, float):
            return f"{value:.4g}" if abs(value) < 1e5 else f"{value:.6g}"
        if isinstance(value, dict):
            return "  ".join(f"{k} {fmt(v)}" for k, v in value.items())
        return "-" if value is None else str(value)

    table = Table(title=f"{name}  ({summary['task']})", show_header=False)
    table.add_column("field", style="bold")
    table.add_column("value")
    for key, value in summary.items():
        if key == "metadata":
            for meta_key, meta_value in value.items():
                table.add_row(f"metadata/{meta_key}", fmt(meta_value))
        elif key not in ("file", "task"):
            table.add_row(key, fmt(value))
    Console().print(table)
