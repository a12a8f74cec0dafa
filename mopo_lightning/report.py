"""``mopo-lightning report RUN_OR_SWEEP_DIR...``: the paper's tables with honest statistics, and figures.

Sources: MOPO (Yu et al. 2020, arXiv 2005.13239) Table 1 (D4RL normalised scores, dataset x env) and
Table 2 (out-of-distribution tasks: batch mean and batch max, the mean and best episode return of the
dataset under the test task's reward, beside MOPO's and MBPO's returns); statistics as Agarwal et al. 2021
recommend (``analysis/statistics.py``: mean and IQM with 95% stratified-bootstrap intervals, probability
of improvement).

- Runs: a directory holding ``results.json`` is a run; any other directory is searched for run directories
  (a sweep directory; ``.dynamics_cache`` and other hidden directories are skipped).
- Configuration: runs grouped by everything but the seed: task, dataset, h, lambda, the penalty kind
  (``run.json``'s ``data.penalty_kind``) and any other ``run.json`` key whose value differs between runs.
  Two runs of one configuration with the same seed are one seed: the newest ``results.json`` is kept and
  a warning names the others.
- Score of a run: its final evaluation (default) or the mean of its last K evaluations (``--last K``); the
  D4RL normalised score where the run has one (``score_reference`` D4RL or minari:<id>), else the return.
- lambda = 0 is MBPO (penalty off); the OOD table's MBPO column is the lambda-0 runs with the same h.
- Across tasks: a method (a configuration without its task and dataset) is aggregated over the scored
  tasks it ran, on the seeds every one of those tasks has (a rectangular [runs, tasks] matrix).
- Batch statistics come from the dataset file that ``results.json`` names, read in file order and cut at
  ``terminals | timeouts``; a trailing episode cut by the end of the file is left out.
"""

from __future__ import annotations

import itertools
import json
import math
import sys
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from mopo_lightning.analysis import statistics as st
from mopo_lightning.data.d4rl import DatasetError, episode_ends, read_arrays, relabel_rewards, resolve_dataset
from mopo_lightning.tasks import get_task

D4RL_ROWS = {"random": "random", "medium": "medium", "medium-replay": "mixed", "medium-expert": "medium-expert"}
"""D4RL dataset kinds and the paper's row names ("mixed" is D4RL's medium-replay)."""
NOT_CONFIG = ("seed_everything", "data.seed", "run_name", "run_root", "data.task", "data.dataset", "data.path",
              "data.rollout_length", "data.penalty_coef", "data.penalty_kind", "data.collect_")
"""``run.json`` keys that are the seed, the run's name, or already a named part of the configuration."""
PREMISE = ("spearman", "violation_rate", "return_gap")


@dataclass
class Run:
    """The fields of one ``results.json`` (and its ``run.json``) that the report uses."""

    path: Path
    task: str
    dataset: str
    seed: int
    penalty_coef: float | None
    rollout_length: int | None
    penalty_kind: str | None
    score_reference: str | None
    evaluations: list[dict[str, Any]]
    final_premise: dict[str, Any] | None
    identity: dict[str, Any] = field(default_factory=dict)
    extra: tuple = ()

    @property
    def algo(self) -> str:
        return "MBPO" if self.penalty_coef == 0 else "MOPO"

    @property
    def scored(self) -> bool:
        return self.score_reference != "none" and any(e.get("normalized_score") is not None for e in self.evaluations)

    def value(self, last: int = 1, key: str | None = None) -> float | None:
        """Mean of the last ``last`` evaluations' score (or ``key``); None when there is none."""
        key = key or ("normalized_score" if self.scored else "return_mean")
        values = [e.get(key) for e in self.evaluations[-last:]]
        if not values or any(v is None or not math.isfinite(v) for v in values):
            return None
        return float(np.mean(values))

    @property
    def config(self) -> tuple:
        return (get_task(self.task).name, self.dataset, self.rollout_length, self.penalty_coef, self.penalty_kind,
                self.extra)

    @property
    def method(self) -> tuple:
        return self.config[2:]


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
    evals = list(data.get("evaluations") or [])
    if not evals and data.get("final_return") is not None:  # a run that recorded only its final numbers
        evals = [{"sac_updates": 0, "return_mean": data["final_return"],
                  "normalized_score": data.get("final_normalized_score")}]
    premise = data.get("final_premise") or {}
    kind = identity.get("data.penalty_kind", data.get("penalty_kind", premise.get("penalty_kind")))
    reference = data.get("score_reference") or ("D4RL" if get_task(data["task"]).has_reference_scores else "none")
    return Run(path, data["task"], str(data["dataset"]), int(data.get("seed", 0)), data.get("penalty_coef"),
               data.get("rollout_length"), kind, reference, evals, data.get("final_premise"), identity)


def find_runs(paths: Sequence[str | Path]) -> list[Path]:
    """``results.json`` files of the given runs, or of the runs found under the given directories."""
    found: list[Path] = []
    for path in map(Path, paths):
        if path.is_dir() and not (path / "results.json").exists():
            hits = [p for p in sorted(path.rglob("results.json"))
                    if not any(part.startswith(".") for part in p.relative_to(path).parts)]
            if not hits:
                raise ValueError(f"{path}: no run directories (results.json) under it")
            found += hits
        else:
            found.append(path / "results.json" if path.is_dir() else path)
    return found


def with_extra_keys(runs: list[Run]) -> list[Run]:
    """Give each run the ``run.json`` keys (beyond the named ones) whose values differ between runs."""
    keys = sorted({k for r in runs for k in r.identity if not k.startswith(NOT_CONFIG)})
    varying = [k for k in keys if len({json.dumps(r.identity.get(k), sort_keys=True) for r in runs}) > 1]
    for run in runs:
        run.extra = tuple((k, json.dumps(run.identity.get(k))) for k in varying)
    return runs


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


def label(config: tuple) -> str:
    """``hopper hopper-medium-replay-v2 h5 lam1 aleatoric``; the dataset as a file stem when it is a path."""
    task, dataset, h, lam, kind, extra = config
    name = Path(dataset).stem if dataset.endswith((".hdf5", ".h5")) else dataset
    parts = [task, name, f"h{h}" if h is not None else "", f"lam{lam:g}" if lam is not None else "", kind or ""]
    parts += [f"{k}={v}" for k, v in extra]
    return " ".join(p for p in parts if p)


def method_label(method: tuple) -> str:
    return label(("", "", *method)).strip() or "default"


# ---------------------------------------------------------------- the dataset's own returns


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
    ends, raw = episode_ends(path)
    rewards = np.asarray(raw["rewards"], dtype=np.float64).reshape(-1)
    if spec.relabel is not None:
        data = read_arrays(path, ("rewards",), optional=spec.relabel.keys)
        rewards = relabel_rewards(Path(path), data, spec).astype(np.float64)
    stops = np.flatnonzero(ends) + 1  # one past each episode's last row
    if stops.size == 0:
        return np.zeros(0)
    return np.add.reduceat(rewards[: stops[-1]], np.concatenate([[0], stops[:-1]]))


# ---------------------------------------------------------------- statistics


@dataclass(frozen=True)
class Settings:
    """How scores are chosen and intervals computed."""

    last: int = 1
    reps: int = st.REPS
    seed: int = st.SEED


def interval_stats(values: Sequence[float], settings: Settings) -> dict[str, Any] | None:
    """n, mean and IQM with 95% intervals of one configuration's per-seed values (None when empty)."""
    values = [v for v in values if v is not None]
    if not values:
        return None
    est = st.mean_and_iqm(np.asarray(values)[:, None], settings.reps, settings.seed)  # [seeds, 1 task]
    return {"n": len(values), "mean": est["mean"].as_dict(), "iqm": est["iqm"].as_dict()}


def configurations(groups: dict[tuple, list[Run]], settings: Settings) -> list[dict[str, Any]]:
    """One row per configuration: seeds, measure, mean and IQM with intervals, premise means, reference."""
    rows = []
    for config, runs in groups.items():
        runs = sorted(runs, key=lambda r: r.seed)
        measure = "normalized_score" if all(r.scored for r in runs) else "return_mean"
        values = [r.value(settings.last, measure) for r in runs]
        premise = {k: float(np.mean(v)) for k in PREMISE
                   if (v := [r.final_premise[k] for r in runs if r.final_premise and r.final_premise.get(k) is not None])}
        rows.append({"configuration": label(config), "task": config[0], "dataset": config[1],
                     "rollout_length": config[2], "penalty_coef": config[3], "penalty_kind": config[4],
                     "other": dict(config[5]), "seeds": [r.seed for r in runs], "measure": measure,
                     "values": values, "statistics": interval_stats(values, settings), "premise": premise or None,
                     "score_reference": sorted({str(r.score_reference) for r in runs}),
                     "runs": [str(r.path.parent) for r in runs]})
    return rows


def method_matrices(runs: list[Run], settings: Settings) -> dict[tuple, tuple[list[str], np.ndarray]]:
    """Per method: its scored tasks and the ``[seeds, tasks]`` score matrix on the seeds all of them have."""
    cells: dict[tuple, dict[str, dict[int, float]]] = defaultdict(lambda: defaultdict(dict))
    for run in runs:
        if run.scored and (value := run.value(settings.last, "normalized_score")) is not None:
            cells[run.method][f"{get_task(run.task).name} {run.dataset}"][run.seed] = value
    out = {}
    for method, tasks in cells.items():
        seeds = sorted(set.intersection(*(set(s) for s in tasks.values())))
        if seeds:
            names = sorted(tasks)
            out[method] = (names, np.array([[tasks[t][s] for t in names] for s in seeds]))  # [seeds, tasks]
    return out


def aggregates(runs: list[Run], settings: Settings) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Across tasks: per method IQM and mean with intervals; P(X > Y) for every ordered pair of methods."""
    matrices = method_matrices(runs, settings)
    rows = []
    for method, (tasks, scores) in matrices.items():
        est = st.mean_and_iqm(scores, settings.reps, settings.seed)
        rows.append({"method": method_label(method), "tasks": tasks, "seeds": scores.shape[0],
                     "iqm": est["iqm"].as_dict(), "mean": est["mean"].as_dict()})
    pairs = []
    for (mx, (tx, x)), (my, (ty, y)) in itertools.permutations(matrices.items(), 2):
        common = sorted(set(tx) & set(ty))
        if not common:
            continue
        xs, ys = x[:, [tx.index(t) for t in common]], y[:, [ty.index(t) for t in common]]
        poi = st.probability_of_improvement(xs, ys, settings.reps, settings.seed)
        pairs.append({"x": method_label(mx), "y": method_label(my), "tasks": common, **poi.as_dict()})
    return rows, pairs


def ood_table(groups: dict[tuple, list[Run]], settings: Settings) -> list[dict[str, Any]]:
    """Table 2 rows, one per variant-task configuration with lambda > 0: batch mean/max, MOPO and MBPO returns."""
    rows = []
    for config, runs in groups.items():
        task, dataset, h, lam, kind, extra = config
        if get_task(task).has_reference_scores or lam == 0:
            continue
        path = dataset_file(runs[0])
        returns = episode_returns(path, task) if path is not None else np.zeros(0)
        mbpo = groups.get((task, dataset, h, 0.0, kind, extra)) or groups.get((task, dataset, h, 0, kind, extra), [])
        rows.append({"task": task, "dataset": dataset, "rollout_length": h, "penalty_coef": lam,
                     "penalty_kind": kind, "episodes": int(returns.size),
                     "batch_mean": float(returns.mean()) if returns.size else None,
                     "batch_max": float(returns.max()) if returns.size else None,
                     "mopo": interval_stats([r.value(settings.last, "return_mean") for r in runs], settings),
                     "mbpo": interval_stats([r.value(settings.last, "return_mean") for r in mbpo], settings)})
    return sorted(rows, key=lambda r: (r["task"], r["dataset"], r["rollout_length"] or 0, r["penalty_coef"] or 0))


def d4rl_kind(dataset: str) -> str:
    """The paper's row name of a dataset: ``hopper-medium-replay-v2`` -> ``mixed``; files -> their stem."""
    name = Path(dataset).stem if dataset.endswith((".hdf5", ".h5")) else dataset
    parts = name.lower().replace("_", "-").split("-")
    core = "-".join(p for p in parts[1:] if not (p.startswith("v") and p[1:].isdigit()))
    return D4RL_ROWS.get(core, name)


def d4rl_tables(rows: list[dict[str, Any]]) -> dict[str, dict[str, dict[str, Any]]]:
    """Table 1 per method: {method: {dataset row: {env: statistics}}} for configurations with scores."""
    tables: dict[str, dict[str, dict[str, Any]]] = defaultdict(lambda: defaultdict(dict))
    for row in rows:
        if row["measure"] == "normalized_score" and get_task(row["task"]).has_reference_scores:
            method = method_label((row["rollout_length"], row["penalty_coef"], row["penalty_kind"],
                                   tuple(row["other"].items())))
            tables[method][d4rl_kind(row["dataset"])][row["task"]] = row["statistics"]
    return {m: dict(t) for m, t in tables.items()}


# ---------------------------------------------------------------- the report


def build_report(paths: Sequence[str | Path], settings: Settings = Settings()) -> tuple[dict[str, Any], list]:
    """The report as a JSON-ready dict, and the deduplicated runs (for figures)."""
    runs = with_extra_keys([load_run(p) for p in find_runs(paths)])
    runs, dropped = deduplicate(runs)
    groups: dict[tuple, list[Run]] = defaultdict(list)
    for run in runs:
        groups[run.config].append(run)
    groups = dict(sorted(groups.items(), key=lambda kv: json.dumps(kv[0], default=str)))
    rows = configurations(groups, settings)
    aggregate, poi = aggregates(runs, settings)
    selection = "final evaluation" if settings.last == 1 else f"mean of the last {settings.last} evaluations"
    report = {
        "settings": {"score": selection, "last": settings.last, "bootstrap_reps": settings.reps,
                     "bootstrap_seed": settings.seed, "confidence": st.CONFIDENCE,
                     "interval": "percentile, stratified bootstrap over seeds (rliable)"},
        "score_references": sorted({str(r.score_reference) for r in runs}),
        "duplicates_left_out": [str(r.path.parent) for r in dropped],
        "configurations": rows, "aggregates": aggregate, "probability_of_improvement": poi,
        "d4rl": d4rl_tables(rows), "ood": ood_table(groups, settings)}
    return report, runs


def figure_data(runs: list[Run], report: dict[str, Any]) -> list[dict[str, Any]]:
    """Plain data per configuration for ``analysis.figures.study_figures``: panel, h, lambda, curves, IQM."""
    by_run = {str(r.path.parent): r for r in runs}
    out = []
    for row in report["configurations"]:
        members = [by_run[p] for p in row["runs"]]
        out.append({"label": row["configuration"], "measure": row["measure"],
                    "panel": f"{row['task']} {Path(row['dataset']).name}",
                    "grid_key": label((row["task"], row["dataset"], None, None, row["penalty_kind"],
                                       tuple(row["other"].items()))),
                    "h": row["rollout_length"], "lambda": row["penalty_coef"], "statistics": row["statistics"],
                    "curves": [[(e["sac_updates"], e.get(row["measure"])) for e in r.evaluations] for r in members]})
    return out


def main(runs: list[str], json: bool = False, out: str | None = None, last: int = 1, reps: int = st.REPS,
         seed: int = st.SEED) -> None:
    """Tables with 95% bootstrap intervals, IQM and probability of improvement from runs' results.json.

    Args:
        runs: run directories (or their results.json files), or directories holding runs (a sweep directory).
        json: print the report as JSON instead of Markdown.
        out: also write report.md, report.json and the figures (PNG) into this directory.
        last: a run's score is the mean of its last K evaluations (1: the final evaluation, the paper's choice).
        reps: bootstrap replications of every interval.
        seed: seed of the bootstrap's random state (a report is reproducible).
    """
    from json import dumps

    from mopo_lightning.analysis.figures import study_figures
    from mopo_lightning.analysis.tables import markdown

    if last < 1 or reps < 1:
        raise ValueError("--last and --reps must be >= 1")
    try:
        report, loaded = build_report(runs, Settings(last, reps, seed))
    except ValueError as err:
        raise DatasetError(str(err)) from None
    if report["duplicates_left_out"]:
        print(f"warning: {len(report['duplicates_left_out'])} run(s) repeat the configuration and seed of a newer "
              f"run and are left out: {', '.join(report['duplicates_left_out'])}", file=sys.stderr)
    if out is not None:
        from mopo_lightning.files import write_text_atomic

        Path(out).mkdir(parents=True, exist_ok=True)
        report["figures"] = [str(p) for p in study_figures(figure_data(loaded, report), Path(out), reps, seed)]
        write_text_atomic(Path(out) / "report.json", dumps(report, indent=1) + "\n")
        write_text_atomic(Path(out) / "report.md", markdown(report) + "\n")
    print(dumps(report, indent=1) if json else markdown(report))
