"""The runs a report reads: where they are, whether they finished, and which method each one is.

- A directory holding ``results.json`` is a run; any other directory is searched for runs (hidden ones, such
  as ``.dynamics_cache``, are skipped). A sweep directory's ``sweep.json`` names its trials, so a trial with
  no ``results.json`` is named as missing rather than silently absent.
- Finished means finished: ``results.json``'s ``status`` (written by ``fit``) must be ``finished``. Others are
  left out, each named with its reason, unless ``include_unfinished`` keeps them (marked).
- What a method is: a run made by a sweep arm (``fit --method``) belongs to that named method, whatever its
  dataset's own h and lambda; any other run's method is its algorithm keys: h, lambda, the penalty kind and
  any other ``run.json`` key that differs between such runs. Sizes linked from the data, paths, seeds, names,
  logging and threads never make a method. Within one task, dataset and method, any key that still differs
  (the planned budget included) splits the runs into separate configurations, so unlike runs never pool.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from mopo_lightning.tasks import get_task

NAMED = ("mopo.rollout_length", "mopo.penalty_coef", "mopo.penalty_kind")
"""h, lambda and the penalty kind: an unnamed run's method always names them."""
NOT_METHOD = ("seed_everything", "data.seed", "run_name", "run_root", "method", "data.task", "data.dataset",
              "data.path", "data.data_dir", "data.collect_", "model.obs_dim", "model.act_dim", "model.log_every_n",
              "trainer.log_every_n_steps", "trainer.logger", "trainer.callbacks", "trainer.enable_",
              "trainer.default_root_dir", "premise.", "checkpoint_every_n_epochs", "keep_checkpoints",
              "dynamics_checkpoint", "dynamics_cache", "threads.", "num_threads", "config", "stage")
"""``run.json`` keys that never make a method: seeds, names, the data's source and the sizes linked from it,
logging, checkpoints and threads."""
BUDGET = "planned.sac_updates"
"""The planned budget, added to a run's keys: runs of different budgets are different configurations."""
STATUS_REASONS = {"running": "status running (still running, or killed without a word)",
                  None: "no status recorded"}


@dataclass
class Run:
    """The fields of one ``results.json`` (and its ``run.json``) that the report uses."""

    path: Path
    task: str
    dataset: str
    seed: int
    method_name: str | None
    penalty_coef: float | None
    rollout_length: int | None
    penalty_kind: str | None
    score_reference: str | None
    evaluations: list[dict[str, Any]]
    final_premise: dict[str, Any] | None
    status: str | None = None
    status_detail: dict[str, Any] = field(default_factory=dict)
    identity: dict[str, Any] = field(default_factory=dict)
    method: tuple = ()
    """Set by ``assign_methods``: ``(name,)`` or ``(h, lambda, kind)``, then ``(key, value)`` pairs."""

    @property
    def finished(self) -> bool:
        return self.status == "finished"

    @property
    def scored(self) -> bool:
        return self.score_reference != "none" and any(e.get("normalized_score") is not None for e in self.evaluations)

    @property
    def config(self) -> tuple:
        return (get_task(self.task).name, self.dataset, self.method)

    def value(self, last: int = 1, key: str | None = None) -> float | None:
        """Mean of the last ``last`` evaluations' score (or ``key``); None when there is none."""
        key = key or ("normalized_score" if self.scored else "return_mean")
        values = [e.get(key) for e in self.evaluations[-last:]]
        if not values or any(v is None or not math.isfinite(v) for v in values):
            return None
        return float(np.mean(values))

    def why_unfinished(self) -> str:
        """The reason a run is left out by default ('' when it finished)."""
        if self.finished:
            return ""
        if self.status in STATUS_REASONS:
            return STATUS_REASONS[self.status]
        detail = ", ".join(f"{k} {v}" for k, v in self.status_detail.items())
        return f"{self.status}" + (f" ({detail})" if detail else "")


def load_run(path: str | Path) -> Run:
    """Read ``RUN_DIR/results.json`` (or a results.json path) and the ``run.json`` beside it."""
    path = Path(path)
    if path.is_dir():
        path = path / "results.json"
    try:
        data = json.loads(path.read_text())
        data["task"], data["dataset"]
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise ValueError(f"{path}: not a run's results.json ({type(err).__name__}: {err})") from None
    try:
        identity = json.loads((path.parent / "run.json").read_text())
    except (OSError, ValueError):
        identity = {}
    planned = data.get("planned") or {}
    identity[BUDGET] = planned.get("sac_updates")
    premise = data.get("final_premise") or {}
    kind = identity.get("mopo.penalty_kind", data.get("penalty_kind", premise.get("penalty_kind")))
    reference = data.get("score_reference") or ("D4RL" if get_task(data["task"]).has_reference_scores else "none")
    return Run(path, data["task"], str(data["dataset"]), int(data.get("seed", 0)),
               data.get("method", identity.get("method")), data.get("penalty_coef"), data.get("rollout_length"),
               kind, reference, list(data.get("evaluations") or []), data.get("final_premise"), data.get("status"),
               dict(data.get("status_detail") or {}), identity)


def find_runs(paths: list[str | Path]) -> tuple[list[Path], list[tuple[str, str]]]:
    """``results.json`` files of the given runs or found under the given directories, and the sweep trials
    (``sweep.json``) that have none, as (run directory, reason)."""
    found: list[Path] = []
    missing: list[tuple[str, str]] = []
    for path in map(Path, paths):
        if path.is_dir() and not (path / "results.json").exists():
            hits = [p for p in sorted(path.rglob("results.json"))
                    if not any(part.startswith(".") for part in p.relative_to(path).parts)]
            missing += _missing_trials(path)
            if not hits and not missing:
                raise ValueError(f"{path}: no run directories (results.json) under it")
            found += hits
        else:
            found.append(path / "results.json" if path.is_dir() else path)
    return found, missing


def _missing_trials(sweep_dir: Path) -> list[tuple[str, str]]:
    try:
        trials = json.loads((sweep_dir / "sweep.json").read_text())["trials"]
    except (OSError, ValueError, KeyError, TypeError):
        return []
    return [(str(sweep_dir / t["name"]), "no results.json (the trial never started its run)")
            for t in trials if not (sweep_dir / t["name"] / "results.json").exists()]


def _excluded(key: str) -> bool:
    return any(key == k or (k.endswith((".", "_")) and key.startswith(k)) for k in NOT_METHOD)


def _varying(runs: list[Run], keys: list[str]) -> list[str]:
    return [k for k in keys if len({json.dumps(r.identity.get(k), sort_keys=True) for r in runs}) > 1]


def assign_methods(runs: list[Run]) -> list[Run]:
    """Give each run its ``method`` (see the module docstring)."""
    keys = sorted({k for r in runs for k in r.identity if not _excluded(k)})
    algorithm = [k for k in keys if k not in NAMED and k != BUDGET]
    unnamed = [r for r in runs if r.method_name is None]
    global_keys = _varying(unnamed, algorithm)
    for run in runs:
        if run.method_name is not None:
            run.method = (run.method_name,)
        else:
            run.method = (run.rollout_length, run.penalty_coef, run.penalty_kind,
                          *((k, json.dumps(run.identity.get(k))) for k in global_keys))
    cells: dict[tuple, list[Run]] = {}
    for run in runs:
        cells.setdefault(run.config, []).append(run)
    for members in cells.values():
        named = members[0].method_name is not None
        split = _varying(members, [k for k in keys if named or (k not in NAMED and k not in global_keys)])
        for run in members:
            run.method = (*run.method, *((k, json.dumps(run.identity.get(k))) for k in split))
    return runs


def method_label(method: tuple) -> str:
    """``MOPO``, ``MOPO mopo.rollout_length=1`` or ``h5 lam1 aleatoric model.lr=0.001``."""
    if method and isinstance(method[0], str):
        head, rest = [method[0]], method[1:]
    else:
        h, lam, kind, *rest = method
        head = [f"h{h}" if h is not None else "", f"lam{lam:g}" if lam is not None else "", kind or ""]
    parts = head + [f"{k}={v}" for k, v in rest]
    return " ".join(p for p in parts if p) or "default"


def deduplicate(runs: list[Run]) -> tuple[list[Run], list[Run]]:
    """One run per (configuration, seed): the newest results.json; returns (kept, left out)."""
    newest: dict[tuple, Run] = {}
    dropped = []
    for run in sorted(runs, key=lambda r: r.path.stat().st_mtime_ns, reverse=True):
        key = (run.config, run.seed)
        if key in newest:
            dropped.append(run)
        else:
            newest[key] = run
    return [r for r in runs if r not in dropped], dropped
