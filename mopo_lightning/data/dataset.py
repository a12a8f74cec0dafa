"""The offline dataset a run names: its source, its task (the data's own for Minari), its file, its rows.

One place decides what ``data.path`` / ``data.dataset`` mean (``data.source.dataset_source``), which task
the run trains and evaluates on (a Minari dataset brings its recorded env and reference scores), which
reference normalises scores, and how the rows are read (``transitions`` or ``qlearning``; the authors'
``max_rows`` pool). Collecting a missing file is not its job: that sits above, in the training layer.
"""

from __future__ import annotations

import logging
from pathlib import Path

from tensordict import TensorDict

from mopo_lightning.data.d4rl import load_dataset
from mopo_lightning.data.d4rl_download import resolve_dataset
from mopo_lightning.data.source import dataset_source
from mopo_lightning.envs.tasks import Task, get_task
from mopo_lightning.guards import ConfigError

log = logging.getLogger(__name__)


class OfflineDataset:
    """The dataset of ``data.path`` (a file, or a Minari dataset directory) or ``data.dataset`` (a name)."""

    def __init__(self, task: str, dataset: str | None = None, path: str | None = None,
                 mode: str = "transitions", data_dir: str | None = None, max_rows: int | None = None) -> None:
        if path is None and dataset is None:
            raise ConfigError("the data needs `data.path` (an HDF5 file) or `data.dataset` (a D4RL or Minari name)")
        if max_rows is not None and max_rows < 1:
            raise ConfigError(f"data.max_rows must be at least 1 (or null for every row), got {max_rows}")
        self.name, self.path, self.mode, self.data_dir, self.max_rows = dataset, path, mode, data_dir, max_rows
        self.source = dataset_source(path if path is not None else dataset)
        """Where the data come from: ``file`` (HDF5), ``d4rl`` (a D4RL name) or ``minari``."""
        if self.source == "minari" and mode != "transitions":
            raise ConfigError("data.mode qlearning is D4RL's file reading; a Minari dataset has its episodes' "
                              "own next observations (use data.mode transitions)")
        self._task = get_task(task)
        self._minari = None  # the opened MinariDataset, on first use
        self._announced = False

    @property
    def task(self) -> Task:
        """The registry's task, or a Minari dataset's own (recorded env id and kwargs, sizes, health ranges,
        ``ref_min_score``/``ref_max_score``)."""
        if self.source == "minari":
            self.minari_dataset()
        return self._task

    @property
    def score_reference(self) -> str:
        """Which reference returns normalise scores: ``D4RL``, ``minari:<id>`` or ``none`` (scores null)."""
        if not self.task.has_reference_scores:
            return "none"
        return f"minari:{self.minari_dataset().spec.dataset_id}" if self.source == "minari" else "D4RL"

    def minari_dataset(self):
        """The Minari dataset (``data.minari.open_dataset``, downloaded when missing), opened once."""
        if self._minari is None:
            from mopo_lightning.data.minari import dataset_task, open_dataset

            dataset = open_dataset(self.path if self.path is not None else self.name)
            self._task = dataset_task(dataset, self._task)
            self._minari = dataset
        return self._minari

    def file(self) -> Path:
        """The data file: an existing ``path``, a D4RL name's file (downloaded when missing), or a Minari
        dataset's ``.../data/main_data.hdf5`` (which ``data info`` reads as that Minari dataset)."""
        if self.source == "minari":
            from mopo_lightning.data.minari import dataset_file

            return dataset_file(self.minari_dataset())
        if self.path is not None:
            return resolve_dataset(Path(self.path).expanduser())
        return resolve_dataset(self.name, data_dir=self.data_dir)

    def load(self) -> TensorDict:
        """Read and validate the rows (the last ``max_rows`` only, as the authors' 1M-row FIFO pool)."""
        if self.source == "minari":
            from mopo_lightning.data.minari import load_minari

            rows = load_minari(self.minari_dataset(), self.task)
        else:
            rows = load_dataset(self.file(), self.task, mode=self.mode)
        self._announce_scores()
        if self.max_rows is not None and rows.shape[0] > self.max_rows:
            log.info("data.max_rows: keeping the last %d of %d transitions", self.max_rows, rows.shape[0])
            rows = rows[rows.shape[0] - self.max_rows:].clone()
        return rows

    def _announce_scores(self) -> None:
        """Say once when scores cannot be normalised (no reference returns for this data)."""
        if self._announced or self.task.has_reference_scores:
            return
        self._announced = True
        name = self.name if self.source == "minari" and self.path is None else self.task.name
        message = (f"{name}: no reference scores (ref_min_score/ref_max_score), so normalised scores are null; "
                   "returns are reported")
        print(f"mopo-lightning: {message}", flush=True)
        log.info(message)
