"""Run identity: a run directory belongs to one configuration, and a resume continues that run only.

The worst outcome of a training tool is a wrong number that looks right. Starting ``fit`` again into a
directory that holds a run would mix two runs' ``results.json``, TensorBoard curves and checkpoints, so it
is refused unless the user resumes (``--ckpt_path last``) or explicitly replaces the run (``--overwrite``).
A resume whose configuration differs from the saved one in anything but the budget and the hardware
refuses too, naming the keys. ``--ckpt_path`` is checked (exists, is a file, loads) before any training,
and a corrupt checkpoint is named as corrupt together with the newest good one to resume from instead.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import torch

from mopo_lightning.files import write_text_atomic
from mopo_lightning.guards import CheckpointError, ConfigError, require_same

IDENTITY = "run.json"
"""The run's resolved configuration, written when it starts, compared when it resumes."""

FREE_KEYS = (
    "ckpt_path", "overwrite", "stage", "num_threads", "threads", "dynamics_cache", "config", "run_name", "run_root",
    "trainer.max_epochs", "trainer.max_steps", "trainer.max_time", "trainer.devices", "trainer.num_nodes",
    "trainer.strategy", "trainer.accelerator", "trainer.enable_progress_bar", "trainer.enable_model_summary",
)
"""Keys a resume may change: the budget, the hardware, the terminal and where the run lives. Everything else
defines the run."""

PATH_KEYS = ("data.path", "collect.path", "data.data_dir", "dynamics_checkpoint")
"""Compared as absolute paths: ``data/x.hdf5`` from the repository and its absolute name are the same file."""


def flatten(tree: Any, prefix: str = "") -> dict[str, Any]:
    """``{"a": {"b": 1}}`` -> ``{"a.b": 1}``, with values as JSON stores them (tuples become lists)."""
    if isinstance(tree, dict):
        out: dict[str, Any] = {}
        for key, value in tree.items():
            out.update(flatten(value, f"{prefix}{key}."))
        return out
    return {prefix[:-1]: json.loads(json.dumps(tree, default=str))}


def identity(config: dict[str, Any]) -> dict[str, Any]:
    """The keys that define a run (``FREE_KEYS`` and their subtrees left out)."""
    flat = flatten(config)
    for key in PATH_KEYS:
        if isinstance(flat.get(key), str):
            flat[key] = str(Path(flat[key]).expanduser().resolve())
    return {k: v for k, v in sorted(flat.items())
            if not any(k == free or k.startswith(free + ".") for free in FREE_KEYS) and not k.startswith("__")}


def check_checkpoint(path: str | Path) -> None:
    """Raise ``CheckpointError`` unless ``path`` is a readable Lightning checkpoint."""
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"--ckpt_path {path}: no such file")
    if path.is_dir():
        raise CheckpointError(f"--ckpt_path {path}: is a directory, not a checkpoint file")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception as error:  # truncated, random bytes, not a torch file
        raise CheckpointError(f"{path}: corrupt checkpoint ({type(error).__name__})") from None
    if not isinstance(state, dict) or "state_dict" not in state:
        raise CheckpointError(f"{path}: not a Lightning checkpoint (no state_dict)")


class RunDirectory:
    """One run's directory: ``run.json``, ``dynamics.ckpt``, ``sac/``, ``tensorboard/``, ``results.json``."""

    def __init__(self, path: str | Path, rank_zero: bool = True) -> None:
        """``rank_zero``: this process is the first of its run (``machine.is_rank_zero``); only the first checks
        and writes (DDP re-runs the command on every rank, after rank 0 has started the run)."""
        self.path = Path(path)
        self.rank_zero = rank_zero
        self._replace = False
        self._identity: dict[str, Any] | None = None
        self.started = False
        """Set by ``start``: from then on the directory holds this run."""

    @property
    def last(self) -> Path:
        return self.path / "sac" / "last.ckpt"

    def holds_run(self) -> bool:
        """True once a run has started here: ``start`` writes ``run.json`` before anything else."""
        return (self.path / IDENTITY).exists()

    def prepare(self, config: dict[str, Any], ckpt_path: str | None, overwrite: bool = False) -> str | None:
        """Check the start or resume against this directory; return the SAC checkpoint to resume, if any.

        Changes nothing on disk: ``start`` does, once the data has been validated, so a run that fails on bad
        input leaves no trace (and no half-made run directory that would block the corrected command).

        - no ``ckpt_path``: the directory must hold no run (``overwrite``: ``start`` deletes the old one);
        - ``last``: the directory must hold a run of the same configuration; its ``sac/last.ckpt`` is
          returned when it exists (else stage 2 starts fresh after stage 1 is loaded or resumed);
        - a file: it must load; a run already here must have the same configuration.
        """
        mine = identity(config)
        if not self.rank_zero:  # rank 0 has checked this start and owns the directory
            self._identity = mine
            last = ckpt_path == "last"
            return (str(self.last) if self.last.exists() else None) if last else ckpt_path
        if ckpt_path is None:
            if not self.holds_run() and self.path.is_dir() and any(self.path.iterdir()):
                raise ConfigError(f"{self.path} holds files but no run (no {IDENTITY}): choose another --run_name "
                                  "or --run_root (--overwrite deletes runs only)")
            if self.holds_run():
                if not overwrite:
                    raise ConfigError(
                        f"{self.path} already holds a run: resume it with --ckpt_path last, or start fresh "
                        "under a new --run_name (--overwrite true deletes the old run)")
                self._replace = True
        elif ckpt_path == "last":
            if not self.holds_run():
                raise ConfigError(f"--ckpt_path last: {self.path} holds no run to resume; "
                                  "start it without --ckpt_path")
            self.check_same_run(mine)
            if not self.last.exists() and not self.last.is_symlink():
                ckpt_path = None
            else:
                self.check_last()
                ckpt_path = str(self.last)
        else:
            check_checkpoint(ckpt_path)
            if self.holds_run():
                self.check_same_run(mine)
        self._identity = mine
        return ckpt_path

    def start(self) -> None:
        """Make the run directory its own: delete a replaced run, then write ``run.json`` (first start only)."""
        if self._identity is None:
            raise RuntimeError("RunDirectory.start() before prepare()")
        self.started = True
        if not self.rank_zero:
            return
        if self._replace:
            shutil.rmtree(self.path)
            self._replace = False
        self.path.mkdir(parents=True, exist_ok=True)
        if not (self.path / IDENTITY).exists():
            write_text_atomic(self.path / IDENTITY, json.dumps(self._identity, indent=1) + "\n")

    def check_same_run(self, mine: dict[str, Any]) -> None:
        """Refuse a resume whose configuration differs from the saved one, naming the keys."""
        saved_path = self.path / IDENTITY
        try:
            saved = json.loads(saved_path.read_text())
        except (OSError, ValueError):
            raise ConfigError(f"{saved_path}: unreadable run identity; start a new --run_name") from None
        require_same(saved, mine, ConfigError, f"{self.path} was run with another configuration",
                     "resume with the same settings (only the budget may change) or use a new --run_name")

    def check_last(self) -> None:
        """Raise ``CheckpointError`` for a corrupt ``last.ckpt``, naming the newest good checkpoint."""
        try:
            check_checkpoint(self.last)
        except CheckpointError as error:
            target = self.last.resolve()
            good = [p for p in self.epoch_checkpoints() if p.resolve() != target and _loads(p)]
            offer = (f"; the newest good one is {good[-1]}: resume with --ckpt_path {good[-1]}" if good
                     else "; no good SAC checkpoint is left: start a new --run_name")
            raise CheckpointError(f"{self.last} -> {target.name}: {error}{offer}") from None

    def epoch_checkpoints(self) -> list[Path]:
        """``sac/epochNNNN.ckpt`` files, oldest first."""
        files = (self.path / "sac").glob("epoch[0-9]*.ckpt")
        return sorted(files, key=lambda p: int(p.stem[5:]))


def _loads(path: Path) -> bool:
    try:
        check_checkpoint(path)
        return True
    except CheckpointError:
        return False
