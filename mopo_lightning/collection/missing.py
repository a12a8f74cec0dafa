"""The one data file a run may make itself when it is missing: the quickstart's self-collected dataset.

Kept out of the data side (which loads, validates and mixes): the recipe calls ``collect_if_missing``
before the data are read. Only the configured file is ever collected, so a mistyped ``--data.path`` is an
error, never a new collection into the typo.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from mopo_lightning.data.errors import DatasetError
from mopo_lightning.data.source import dataset_source
from mopo_lightning.envs.tasks import Task
from mopo_lightning.guards import ConfigError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class CollectIfMissing:
    """What to collect when ``data.path`` is missing.

    Args:
        path: the one file that may be collected when missing (it must be ``data.path``).
        steps: real-env steps to collect into it (null: never collect).
        policy: the behaviour policy (``random``, ``falling``).
    """

    path: str | None = None
    steps: int | None = None
    policy: str = "random"

    def __post_init__(self) -> None:
        if self.steps is not None and self.steps < 1:
            raise ConfigError(f"collect.steps must be at least 1 (or null: never collect), got {self.steps}")


def collect_if_missing(data_path: str | None, spec: CollectIfMissing, task: Task, seed: int) -> None:
    """Collect ``spec.steps`` steps into ``data_path`` when it is missing and is ``spec.path``; a missing
    ``data_path`` that is any other file is a ``DatasetError`` naming it."""
    if data_path is None or dataset_source(data_path) != "file" or Path(data_path).expanduser().exists():
        return  # a Minari dataset or a present file: the data side reads it
    path = Path(data_path).expanduser()
    allowed = spec.path is not None and spec.steps and path.resolve() == Path(spec.path).expanduser().resolve()
    if not allowed:
        hint = f" (only collect.path {spec.path} is collected when missing)" if spec.steps and spec.path else ""
        raise DatasetError(f"{path}: no such file{hint}")
    from mopo_lightning.collection.collect import collect

    message = f"collecting {spec.steps} {spec.policy}-policy {task.name} steps into {path} (collect.path)"
    print(f"mopo-lightning: {message}", flush=True)
    log.info(message)
    collect(task, steps=spec.steps, path=path, policy=spec.policy, seed=seed)
