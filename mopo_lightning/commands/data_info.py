"""``mopo-lightning data info FILE [--task T] [--json]``: a dataset's transitions, episodes, returns and scores.

The summary is ``data.summary.summarize`` (the same validation as ``fit``); this is the command.
"""

from __future__ import annotations

import json as _json
from pathlib import Path

from mopo_lightning.data.summary import print_summary, summarize
from mopo_lightning.envs.tasks import get_task
from mopo_lightning.guards import ConfigError


def main_info(path: str, task: str | None = None, json: bool = False) -> None:
    """Summarise a D4RL-schema dataset: transitions, episodes, returns, normalised scores (a table or JSON).

    Args:
        path: HDF5 file in the D4RL schema, or a Minari dataset id (``mujoco/hopper/medium-v0``) or directory.
        task: task name (default: the file's ``metadata/task``, else the file name).
        json: print JSON instead of a table.
    """
    if task is not None:
        try:
            get_task(task)
        except KeyError as err:
            raise ConfigError(f"--task: {err.args[0]}") from None
    summary = summarize(path, task)
    if json:
        print(_json.dumps(summary, indent=2))
    else:
        print_summary(summary, Path(path).name)
