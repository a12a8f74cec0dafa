"""MOPO's Table 2 (out-of-distribution tasks): the dataset's mean and best episode return under the test task's
reward, beside MOPO's and MBPO's average returns (Yu et al. 2020, section 5.1).

- A row is one lambda > 0 configuration on a variant task (a relabelled reward: ``halfcheetah-jump``,
  ``ant-angle``). Minari and D4RL tasks without reference scores are no OOD tasks.
- Its MBPO column is the lambda-0 configuration of the same task, dataset and settings but lambda (h, budget,
  dynamics, every ``run.json`` key: ``runs.settings``), so two budgets of MBPO never share a cell. Several such
  configurations (e.g. two arms that differ only by name) give one row each, named.
- Batch statistics come from the dataset file the runs name, read in file order and cut at
  ``terminals | timeouts``; a trailing episode cut by the end of the file is left out. A file whose bytes are
  no longer the ones the runs read (its SHA-256) gives none, and the row says so.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from mopo_lightning.analysis.runs import Run, method_label, settings
from mopo_lightning.data import summary
from mopo_lightning.data.d4rl import episode_ends, relabel_rewards
from mopo_lightning.data.d4rl_download import resolve_dataset
from mopo_lightning.data.errors import DatasetError
from mopo_lightning.envs.tasks import get_task
from mopo_lightning.files import sha256_file

Stats = Callable[[Sequence[float | None]], dict[str, Any] | None]


def dataset_file(run: Run) -> Path | None:
    """The run's dataset file: the path as written, relative to the run root's parent, or a cached D4RL name."""
    candidate = Path(run.dataset).expanduser()
    for path in (candidate, run.path.parent.parent.parent / candidate):
        if path.is_file():
            return path
    try:
        return resolve_dataset(run.dataset, download=False)
    except DatasetError:
        return None


def episode_returns(path: str | Path, task: str) -> np.ndarray:
    """Returns of the complete episodes of a D4RL-schema file under ``task``'s reward (relabelled for variants)."""
    spec = get_task(task)
    ends, raw = episode_ends(path, optional=spec.relabel.keys if spec.relabel is not None else ())
    rewards = relabel_rewards(Path(path), raw, spec) if spec.relabel is not None else raw["rewards"]
    returns, _, partial = summary.episode_returns(np.asarray(rewards, dtype=np.float64).reshape(-1), ends)
    return returns[:-1] if partial else returns  # complete episodes only


def batch_returns(run: Run) -> tuple[np.ndarray, str | None]:
    """The dataset's complete-episode returns under the run's task, and why there are none (or None)."""
    path = dataset_file(run)
    if path is None:
        return np.zeros(0), f"{run.dataset}: file not found"
    if run.sha256 and sha256_file(path) != run.sha256:
        return np.zeros(0), f"{path}: its bytes are not the ones the runs read (SHA-256 differs)"
    return episode_returns(path, run.task), None


def ood_table(groups: Mapping[tuple, list[Run]], labels: Mapping[tuple, str], stats: Stats,
              last: int) -> list[dict[str, Any]]:
    """Table 2 rows (module docstring); ``labels``: each configuration's label; ``stats``: per-seed values ->
    n, mean and IQM with intervals."""
    rows = []
    for config, runs in groups.items():
        run = runs[0]
        if get_task(run.task).relabel is None or run.penalty_coef == 0:
            continue
        returns, why = batch_returns(run)
        mine = settings(run, ignore=("mopo.penalty_coef",))
        mbpo = [(c, rs) for c, rs in groups.items() if c[:2] == config[:2] and rs[0].penalty_coef == 0
                and settings(rs[0], ignore=("mopo.penalty_coef",)) == mine]
        for mbpo_config, mbpo_runs in mbpo or [(None, [])]:
            rows.append({"task": config[0], "dataset": run.dataset, "data_key": config[1],
                         "configuration": labels[config], "method": method_label(config[2]),
                         "rollout_length": run.rollout_length, "penalty_coef": run.penalty_coef,
                         "episodes": int(returns.size), "batch_note": why,
                         "batch_mean": float(returns.mean()) if returns.size else None,
                         "batch_max": float(returns.max()) if returns.size else None,
                         "mopo": stats([r.value(last, "return_mean") for r in runs]),
                         "mbpo_method": None if mbpo_config is None else method_label(mbpo_config[2]),
                         "mbpo": stats([r.value(last, "return_mean") for r in mbpo_runs])})
    return sorted(rows, key=lambda r: (r["task"], r["dataset"], r["rollout_length"] or 0, r["penalty_coef"] or 0,
                                       r["configuration"], r["mbpo_method"] or ""))
