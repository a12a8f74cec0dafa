"""The evaluation model: a dynamics ensemble of the same data and settings as the candidates' own, with another
seed, that no candidate policy was trained against.

Why: a policy trained against its own model exploits that model's errors, so the model's estimate of it is
optimistic (Zhang et al. 2021; TOReL/SOReL 2025 roll candidates out in a model fitted apart from them). A second
seed changes the bootstrap draws, the holdout split and the initial weights: another sample of the same learner,
whose errors the policies never saw. It is one model per dataset, so every candidate of a dataset is measured
against the same yardstick, not each against a model of its own.

It comes from the runs' dynamics cache (``dynamics.fingerprint``): the fingerprint of a run's stage 1 with
``data.seed`` replaced, so a second ``select`` on the same runs, a sweep that trained that seed, or another
tool's run of it all serve the same entry. Missing, it is trained into the cache by the same stage-1 code as
``fit`` (``training.stage1.dynamics_stage``), with a progress bar.
"""

from __future__ import annotations

import json
import sys
from collections import Counter
from collections.abc import Iterable
from contextlib import redirect_stdout
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mopo_lightning.analysis.ood import dataset_file
from mopo_lightning.analysis.runs import Run
from mopo_lightning.dynamics.module import DynamicsModule

EVALUATION_SEED = 1000
"""The evaluation model's default ``data.seed``: a seed sweeps do not use (theirs count from 0)."""


@dataclass(frozen=True)
class EvaluationModel:
    """One dataset's evaluation model and where it came from."""

    module: DynamicsModule
    seed: int
    fingerprint: str
    """The cache key of the model (``dynamics.fingerprint.fingerprint_key``)."""
    loaded: bool
    """True: served by the cache; False: trained by this call."""
    checkpoint: str

    def as_dict(self) -> dict[str, Any]:
        return {"seed": self.seed, "fingerprint": self.fingerprint, "loaded": self.loaded,
                "checkpoint": self.checkpoint}


def stage1_record(run: Run) -> dict[str, Any]:
    """The ``dynamics`` section of the run's results.json (its fingerprint fields and cache entry)."""
    section = json.loads(run.path.read_text()).get("dynamics") or {}
    if not section.get("fingerprint_fields"):
        raise ValueError(f"{run.path.parent}: results.json records no dynamics fingerprint (an older run)")
    return section


def shared_fields(runs: Iterable[Run]) -> dict[str, Any]:
    """The stage-1 fingerprint fields most of ``runs`` (one dataset's) share, seed aside."""
    counts: Counter[str] = Counter()
    fields: dict[str, dict[str, Any]] = {}
    for run in runs:
        record = {k: v for k, v in stage1_record(run)["fingerprint_fields"].items() if k != "data.seed"}
        key = json.dumps(record, sort_keys=True)
        counts[key] += 1
        fields.setdefault(key, record)
    if not counts:
        raise ValueError("no runs to take the evaluation model's settings from")
    return fields[counts.most_common(1)[0][0]]


def cache_of(runs: Iterable[Run]) -> Path | None:
    """The dynamics cache the runs' stage 1 used, None when none records one that exists.

    ``cache_entry`` is recorded as ``fit`` was given it, often relative to the directory ``fit`` ran in, which
    is unknown here: it is tried as given, then under each ancestor of the run directory."""
    for run in runs:
        entry = stage1_record(run).get("cache_entry")
        if not entry:
            continue
        for base in (Path(), *run.path.parent.resolve().parents):
            if (base / entry).exists():
                return (base / entry).parent.parent
    return None


def evaluation_model(runs: list[Run], seed: int = EVALUATION_SEED, cache: str | Path | None = None,
                     quiet: bool = False) -> EvaluationModel:
    """Load (or train into ``cache``; None: the runs' own cache) the evaluation model of one dataset's ``runs``."""
    from mopo_lightning.training.datamodule import OfflineDataModule
    from mopo_lightning.training.stage1 import dynamics_stage

    used = sorted({run.seed for run in runs})
    if seed in used:
        raise ValueError(f"evaluation seed {seed} is a seed of the candidates' own models ({used}): choose another "
                         "(--evaluation_seed)")
    fields = shared_fields(runs)
    cache = Path(cache) if cache is not None else cache_of(runs)
    if cache is None:
        raise ValueError("the runs record no dynamics cache: pass --dynamics_cache DIR for the evaluation model")
    path = dataset_file(runs[0])
    data = {key[5:]: value for key, value in fields.items() if key.startswith("data.") and key != "data.sha256"}
    datamodule = OfflineDataModule(path=None if path is None else str(path),
                                   dataset=None if path is not None else runs[0].dataset, **data, seed=seed)
    hparams = {key[9:]: value for key, value in fields.items() if key.startswith("dynamics.")}
    trainer = {"accelerator": "cpu", "devices": 1, "num_nodes": 1, "strategy": "auto", "log_every_n_steps": 50,
               "enable_progress_bar": not quiet}
    home = cache / "evaluation_models" / f"{fields['data.sha256'][:12]}-seed{seed}"
    with redirect_stdout(sys.stderr):  # stage 1's lines are progress: stdout is select's output (--json)
        module, info = dynamics_stage(datamodule, num_threads=None, hparams=hparams, run_dir=home,
                                      checkpoint=None, trainer_kwargs=trainer, logger=None, cache_dir=cache)
    if info["fingerprint_fields"]["data.sha256"] != fields["data.sha256"]:
        raise ValueError(f"{path}: its bytes changed since the runs read them (SHA-256 differs)")
    return EvaluationModel(module.eval(), seed, info["fingerprint"], bool(info["loaded"]),
                           str(info.get("cache_entry") or info["checkpoint"]))
