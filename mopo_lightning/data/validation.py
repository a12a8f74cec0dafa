"""The one validation of a dataset's arrays for a task, shared by D4RL files, Minari datasets and ``data info``.

It refuses, with one line naming the file and the fault: sizes that do not fit the task; NaN or inf;
``terminals``/``timeouts`` that are not exactly 0/1 (bool, or numbers 0 and 1: 0.5 is refused, not read
as True); a variant task's missing reward inputs; and magnitudes no MuJoCo run produces: ``|x| >
MAX_ABS_VALUE`` (1e6) in observations, next observations, rewards or actions. The bound is loose on
purpose: the D4RL locomotion states are O(10) (Hopper and Walker2d clip velocities to +-10, contact forces
are excluded), rewards per step O(10), so only corrupt data (1e30, uninitialised memory) reaches it.
Actions get the same bound, not [-1, 1]: MuJoCo clamps controls to the actuator range, so a file whose
actions slightly exceed the action box (float rounding, unclipped behaviour noise) still describes real
transitions and is accepted.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from mopo_lightning.data.errors import DatasetError
from mopo_lightning.envs.tasks import Task, get_task

MAX_ABS_VALUE = 1e6
"""Largest magnitude accepted in observations, next observations, rewards and actions (module docstring)."""
BOUNDED_KEYS = ("observations", "actions", "rewards", "next_observations")
FLAG_KEYS = ("terminals", "timeouts")


def validate(path: str | Path, data: dict, task: str | Task) -> None:
    """Raise a one-line ``DatasetError`` naming ``path`` and the fault if ``data`` cannot serve ``task``.

    One validation behind ``load_dataset`` (``fit``) and ``summarize`` (``data info``), so a file that
    training refuses, ``data info`` refuses with the same message.
    """
    task = get_task(task)
    obs, act = data["observations"], data["actions"]
    n = obs.shape[0]
    if n == 0:
        raise DatasetError(f"{path}: empty dataset (0 rows)")
    if obs.ndim != 2 or obs.shape[1] != task.obs_dim:
        raise DatasetError(
            f"{path}: observations have shape {obs.shape}, task {task.name} needs [N, {task.obs_dim}]"
        )
    if act.ndim != 2 or act.shape[1] != task.act_dim:
        raise DatasetError(
            f"{path}: actions have shape {act.shape}, task {task.name} needs [N, {task.act_dim}]"
        )
    for key in ("rewards", *FLAG_KEYS):
        if key in data and data[key].size != n:
            raise DatasetError(f"{path}: {key} must hold one value per row, got shape {data[key].shape}")
    if "next_observations" in data and data["next_observations"].shape != obs.shape:
        raise DatasetError(
            f"{path}: next_observations have shape {data['next_observations'].shape}, not {obs.shape}"
        )
    if task.relabel is not None:
        check_relabel_keys(path, data, task)
    for key in BOUNDED_KEYS:
        if key not in data:
            continue
        values = np.asarray(data[key])
        if not np.issubdtype(values.dtype, np.number) or np.issubdtype(values.dtype, np.complexfloating):
            raise DatasetError(f"{path}: {key} must be real numbers, got dtype {values.dtype}")
        rows = values.reshape(n, -1)
        if not np.isfinite(rows).all():
            bad = int((~np.isfinite(rows)).any(1).sum())
            raise DatasetError(f"{path}: {key} hold NaN or inf values ({bad} rows)")
        beyond = (np.abs(rows) > MAX_ABS_VALUE).any(1)
        if beyond.any():
            first = int(np.flatnonzero(beyond)[0])
            raise DatasetError(
                f"{path}: {key} hold values beyond +-{MAX_ABS_VALUE:g}, which no MuJoCo run reaches "
                f"({int(beyond.sum())} rows, first row {first}: max |x| {np.abs(rows[first]).max():.3g})"
            )
    for key in FLAG_KEYS:
        if key not in data:
            continue
        values = np.asarray(data[key]).reshape(n)
        if values.dtype == np.bool_:
            continue
        if not np.issubdtype(values.dtype, np.number):
            raise DatasetError(f"{path}: {key} must be bool or 0/1 numbers, got dtype {values.dtype}")
        bad = ~np.isin(values, (0, 1))
        if bad.any():
            first = int(np.flatnonzero(bad)[0])
            raise DatasetError(
                f"{path}: {key} must be exactly 0 or 1 ({int(bad.sum())} rows are not, "
                f"first row {first}: {values[first]!r})"
            )


def check_relabel_keys(path: str | Path, data: dict, task: Task) -> None:
    """Refuse ``data`` that lacks the ``infos/*`` a variant task recomputes its rewards from."""
    missing = [k for k in task.relabel.keys if k not in data]
    if missing:
        raise DatasetError(
            f"{path}: task {task.name} relabels rewards from {', '.join(missing)}, which the file lacks; "
            "collect it with `mopo-lightning collect` (it records them)"
        )
