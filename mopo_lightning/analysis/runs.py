"""The runs a report reads: where they are, whether they finished, and which method each one is.

- A directory holding ``results.json`` is a run; any other directory is searched for runs (hidden ones, such
  as ``.dynamics_cache``, are skipped). A sweep directory's ``sweep.json`` names its trials, so a trial with
  no ``results.json`` is named as missing rather than silently absent.
- Finished means finished: ``results.json``'s ``status`` (written by ``fit``) must be ``finished``. Others are
  left out, each named with its reason, unless ``include_unfinished`` keeps them (marked).
- What a method is: one setting across tasks. A run made by a sweep arm (``fit --method``) belongs to that
  named method, whatever its dataset's own h and lambda, as long as everything else agrees with the arm's
  other runs: the planned budget (``planned.*``: epochs, SAC updates, evaluations, ``max_steps`` and
  ``max_time``; older records' ``trainer`` limits from ``config.yaml``), whether a time cap ended stage 1
  (``stage1.time_capped``), and every ``run.json`` key (penalty kind and units, evaluation episodes, data mode and
  max_rows, dynamics settings).
  Where they differ, the arm splits into methods named by what differs (``MOPO planned.sac_updates=1500``).
  Any other run's method is h, lambda, the penalty kind and every such key that differs between unnamed runs.
  Sizes linked from the data, paths, the data's collection, seeds, names, logging and threads never make a
  method. Within one task, dataset and method, any key that still differs splits the runs into separate
  configurations, so unlike runs never pool.
- A dataset is its bytes (``Run.data_key``): the SHA-256 stage 1 recorded (``dynamics.fingerprint_fields``),
  whatever the path; a run that recorded none (older runs) falls back to its dataset string.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from mopo_lightning.envs.tasks import get_task
from mopo_lightning.files import read_yaml
from mopo_lightning.guards import ConfigError

NAMED = ("mopo.rollout_length", "mopo.penalty_coef", "mopo.penalty_kind")
"""h, lambda and the penalty kind: an unnamed run's method always names them."""
PER_DATASET = ("mopo.rollout_length", "mopo.penalty_coef")
"""A named arm's settings that follow its dataset (the paper's h and lambda per dataset): they never split it."""
NOT_METHOD = ("seed_everything", "data.seed", "run_name", "run_root", "method", "data.task", "data.dataset",
              "data.path", "data.data_dir", "data.collect_", "collect.", "model.obs_dim", "model.act_dim",
              "model.log_every_n", "trainer.log_every_n_steps", "trainer.logger", "trainer.callbacks",
              "trainer.enable_", "trainer.default_root_dir", "premise.", "checkpoint_every_n_epochs",
              "keep_checkpoints", "dynamics_checkpoint", "dynamics_cache", "threads.", "num_threads", "config", "stage")
"""``run.json`` keys that never make a method: seeds, names, the data's source (its bytes are ``Run.data_key``),
how it was collected, the sizes linked from it, logging, checkpoints and threads."""
BUDGET = "planned."
"""Prefix of the planned budget's keys, added to a run's keys: runs of different budgets are different methods."""
CAPPED = "stage1.time_capped"
"""Whether ``dynamics.max_time`` ended stage 1 (None: results.json cannot tell), added to a run's keys."""
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
    sha256: str | None = None
    """SHA-256 of the dataset's bytes as stage 1 read them (None: not recorded, an older run)."""
    provenance: dict[str, Any] | None = None
    """``results.json``'s ``provenance``: package version and commit, library versions (None: not recorded)."""
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
    def data_key(self) -> str:
        """The dataset as its content: ``sha256:<hex>``, or ``name:<dataset>`` where no hash was recorded."""
        return f"sha256:{self.sha256}" if self.sha256 else f"name:{self.dataset}"

    @property
    def config(self) -> tuple:
        """The cell a run belongs to: (task, dataset content, method)."""
        return (get_task(self.task).name, self.data_key, self.method)

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
    dynamics = data.get("dynamics") or {}
    identity |= planned_budget(data.get("planned") or {}, path.parent / "config.yaml")
    identity[CAPPED] = time_capped(dynamics, identity)
    premise = data.get("final_premise") or {}
    kind = identity.get("mopo.penalty_kind", data.get("penalty_kind", premise.get("penalty_kind")))
    reference = data.get("score_reference") or ("D4RL" if get_task(data["task"]).has_reference_scores else "none")
    return Run(path, data["task"], str(data["dataset"]), int(data.get("seed", 0)),
               data.get("method", identity.get("method")), data.get("penalty_coef"), data.get("rollout_length"),
               kind, reference, list(data.get("evaluations") or []), data.get("final_premise"),
               (dynamics.get("fingerprint_fields") or {}).get("data.sha256"), provenance(data),
               data.get("status"), dict(data.get("status_detail") or {}), identity)


def provenance(data: dict[str, Any]) -> dict[str, Any] | None:
    """``provenance``, with ``resumes``: the versions of resumes under other code (``provenance_resumes``)."""
    if not data.get("provenance"):
        return None
    return {**data["provenance"], "resumes": list(data.get("provenance_resumes") or [])}


def planned_budget(planned: dict[str, Any], config_yaml: Path) -> dict[str, Any]:
    """``planned.*``: results.json's planned epochs, SAC updates and evaluations, and the trainer's
    ``max_steps`` and ``max_time`` from the run's ``config.yaml`` (``run.json`` leaves the budget out)."""
    budget = {f"{BUDGET}{k}": v for k, v in planned.items() if k != "stage"}
    budget.setdefault(f"{BUDGET}sac_updates", None)
    try:
        trainer = (read_yaml(config_yaml) or {}).get("trainer") or {}
    except (OSError, ConfigError, AttributeError):
        trainer = {}
    for key in ("max_steps", "max_time"):
        budget.setdefault(f"{BUDGET}{key}", None if trainer.get(key) == -1 else trainer.get(key))
    return budget


def time_capped(dynamics: dict[str, Any], identity: dict[str, Any]) -> bool | None:
    """Whether ``dynamics.max_time`` ended stage 1. stage 1 records a capped model as not ``reproducible``
    and a cached one by its ``cache_entry`` (never capped); a model loaded with a cap set (a resume,
    ``--dynamics_checkpoint``) records neither: None, so it never pools with either side."""
    if dynamics.get("time_capped") is not None:
        return bool(dynamics["time_capped"])
    if dynamics.get("reproducible") is False:
        return True
    max_time = (dynamics.get("fingerprint_fields") or {}).get("dynamics.max_time", identity.get("dynamics.max_time"))
    return False if max_time is None or "cache_entry" in dynamics else None


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
    """Give each run its ``method`` (see the module docstring): a named arm's runs first split by whatever
    but their dataset's h and lambda differs across them; unnamed runs carry every key that differs between
    any of them; then whatever still differs within one task and dataset splits the cell."""
    keys = sorted({k for r in runs for k in r.identity if not _excluded(k)})
    unnamed = [r for r in runs if r.method_name is None]
    global_keys = _concise(unnamed, _varying(unnamed, [k for k in keys if k not in NAMED]))
    arms: dict[str, list[Run]] = {}
    for run in runs:
        if run.method_name is not None:
            arms.setdefault(run.method_name, []).append(run)
        else:
            run.method = (run.rollout_length, run.penalty_coef, run.penalty_kind, *_pairs(run, global_keys))
    for name, members in arms.items():
        differing = _concise(members, _varying(members, [k for k in keys if k not in PER_DATASET]))
        for run in members:
            run.method = (name, *_pairs(run, differing))
    cells: dict[tuple, list[Run]] = {}
    for run in runs:
        cells.setdefault(run.config, []).append(run)
    for members in cells.values():
        named = members[0].method_name is not None
        split = _concise(members, _varying(members, [k for k in keys if named or k not in NAMED]))
        for run in members:
            run.method = (*run.method, *_pairs(run, split))
    return runs


def settings(run: Run, ignore: tuple[str, ...] = ()) -> str:
    """Everything that defines a run but its data, seed and names (and ``ignore``), as canonical JSON: two
    runs of one setting give one text (the OOD table's MBPO column matches MOPO's settings but lambda)."""
    keys = {k: v for k, v in run.identity.items() if not _excluded(k) and k not in ignore}
    return json.dumps({**keys, "h": run.rollout_length}, sort_keys=True, default=str)


def _concise(runs: list[Run], keys: list[str]) -> list[str]:
    """``keys`` less the planned epochs and evaluations where the planned SAC updates already tell the runs apart
    the same way: the label names the budget once; the runs split exactly as before."""
    lead = f"{BUDGET}sac_updates"
    if lead not in keys:
        return keys
    groups: dict[str, list[Run]] = {}
    for run in runs:
        groups.setdefault(json.dumps(run.identity.get(lead)), []).append(run)
    return [k for k in keys if k == lead or not k.startswith(BUDGET)
            or any(_varying(group, [k]) for group in groups.values())]


def _pairs(run: Run, keys: list[str]) -> tuple[tuple[str, str], ...]:
    return tuple((k, json.dumps(run.identity.get(k))) for k in keys)


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
