"""What ``select`` chooses among: finished runs' policies, each with its own model and its dataset.

- ``final``: each finished run's final policy (``sac/last.ckpt``), one per configuration and seed (the report's
  ``select``, ``assign_methods`` and ``deduplicate``: the newest run of a repeated one).
- ``epochs``: every SAC checkpoint a finished run kept (``sac/epochNNNN.ckpt``; ``fit --keep_checkpoints N``
  keeps the newest N), each a candidate: MOPO's score swings between epochs (tianheyu927/mopo #5). A run that
  kept none is a ``final`` candidate.

A candidate's online score (read only after every choice is made) is the run's evaluation at the candidate's
SAC update count (``sac_updates``, stored in the checkpoint), or for ``final``, the mean of the run's last K.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import torch

from mopo_lightning.analysis.runs import Run, method_label
from mopo_lightning.report import Settings, gather

Kind = Literal["final", "epochs"]


@dataclass(frozen=True)
class Candidate:
    """One policy to estimate: a run's checkpoint."""

    run: Run
    checkpoint: Path
    """The SAC checkpoint holding the policy."""
    epoch: int | None
    """The checkpoint's epoch (``epochs``), None for a run's final policy."""
    sac_updates: int | None
    """SAC updates behind the policy (read from the checkpoint for ``epochs``)."""

    @property
    def name(self) -> str:
        run_dir = str(self.run.path.parent)
        return run_dir if self.epoch is None else f"{run_dir}@epoch{self.epoch}"

    @property
    def method(self) -> str:
        return method_label(self.run.method)

    def online(self, last: int = 1) -> float | None:
        """The true score: the run's evaluation of this policy (``final``: mean of its last ``last``)."""
        if self.sac_updates is None:
            return self.run.value(last)
        key = "normalized_score" if self.run.scored else "return_mean"
        for entry in self.run.evaluations:
            if entry.get("sac_updates") == self.sac_updates:
                value = entry.get(key)
                return None if value is None else float(value)
        return None


def runs_of(paths: Sequence[str | Path]) -> tuple[list[Run], list[tuple[str, str]]]:
    """The finished runs under ``paths`` (one per configuration and seed, the newest), and the ones left out: the
    report's own (``report.gather``), so both see the same runs."""
    return gather(paths, Settings())


def epoch_checkpoints(run: Run) -> list[Path]:
    """The run's kept epoch checkpoints, oldest first."""
    directory = run.path.parent / "sac"
    return sorted(directory.glob("epoch[0-9]*.ckpt"), key=lambda p: int(p.stem[5:]))


def checkpoint_updates(path: Path) -> int:
    """The SAC update count a checkpoint holds (``SACModule.sac_updates``)."""
    state = torch.load(path, map_location="cpu", weights_only=True, mmap=True)["state_dict"]
    return int(state["sac_updates"])


def candidates_of(runs: list[Run], kind: Kind = "final") -> list[Candidate]:
    """Every run's candidates of ``kind`` (module docstring)."""
    if kind not in ("final", "epochs"):
        raise ValueError(f"--candidates must be final or epochs, not {kind!r}")
    out = []
    for run in runs:
        epochs = epoch_checkpoints(run) if kind == "epochs" else []
        if not epochs:
            out.append(Candidate(run, run.path.parent / "sac" / "last.ckpt", None, None))
        out += [Candidate(run, path, int(path.stem[5:]), checkpoint_updates(path)) for path in epochs]
    return out
