"""The report behind ``mopo-lightning report RUN_OR_SWEEP_DIR...`` (``commands/report.py``): the paper's tables with
honest statistics, and figures.

Sources: MOPO (Yu et al. 2020, arXiv 2005.13239) Table 1 (D4RL normalised scores, dataset x env, MOPO beside
MBPO; ``analysis/paper.py``) and Table 2 (OOD tasks; ``analysis/ood.py``); statistics as Agarwal et al. 2021
recommend (``analysis/statistics.py``).

- Runs, their status and their method: ``analysis/runs.py``. Finished runs only, unless
  ``--include_unfinished``; every run left out is named with its reason.
- A cell is keyed by everything that defines it (``analysis/cells.py``): a configuration is (task, dataset
  content, method). A dataset is its bytes (the SHA-256 in ``results.json``), a method one setting across tasks;
  two labels never name one cell (the report refuses in one line). Two runs of one configuration with the same
  seed are one seed: the newest ``results.json`` is kept and the others are named.
- Score of a run: its final evaluation (default) or the mean of its last K evaluations (``--last K``); the
  normalised score where the run has one (``score_reference`` D4RL or minari:<id>), else the return.
- Across tasks: each method pools every task it ran, on the runs each task has; an interval needs
  ``statistics.MIN_RUNS`` runs in every task.
- Provenance: the code and library versions the runs record (``analysis/provenance.py``), with a warning when
  they differ.
- Offline estimates (``--selection``): a ``select.json`` of the same runs puts the estimate ``select`` chose by
  beside each configuration's online score (the mean over its runs' final policies).
"""

from __future__ import annotations

import itertools
import json
import sys
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from mopo_lightning.analysis import cells as cl
from mopo_lightning.analysis import statistics as st
from mopo_lightning.analysis.cells import D4RL_ROWS, Dataset, d4rl_kind  # noqa: F401 - the report's names
from mopo_lightning.analysis.ood import episode_returns, ood_table  # noqa: F401
from mopo_lightning.analysis.paper import PAPER_MOPO, table1  # noqa: F401
from mopo_lightning.analysis.premise_kinds import premise_kinds
from mopo_lightning.analysis.provenance import code_versions, warning
from mopo_lightning.analysis.runs import Run, assign_methods, deduplicate, find_runs, load_run, method_label
from mopo_lightning.data.errors import DatasetError

PREMISE = ("spearman", "violation_rate", "return_gap")
MEANING = (f"An interval is a 95% percentile interval of the stratified bootstrap over runs (rliable) when at "
           f"least {st.MIN_RUNS} runs enter it in every task; with fewer, the range [min, max] of the runs is shown "
           f"instead, marked 'range', because a bootstrap over so few runs covers far less than 95%. n counts runs "
           f"(seeds). P(X > Y) with fewer than {st.MIN_RUNS} runs a side in any task has no interval. Across "
           f"tasks, the mean and P(X > Y) weigh tasks equally; the IQM pools runs, so a task with more runs "
           f"weighs more in it.")


@dataclass(frozen=True)
class Settings:
    """How runs are chosen, scores taken and intervals computed."""

    last: int = 1
    reps: int = st.REPS
    seed: int = st.SEED
    include_unfinished: bool = False
    selection: str | None = None
    """A ``select.json`` (or its directory) whose estimates join the configurations (``attach_selection``)."""


def interval_stats(values: Sequence[float | None], settings: Settings) -> dict[str, Any] | None:
    """n, mean and IQM with their intervals of one configuration's per-seed values (None when empty)."""
    values = [v for v in values if v is not None]
    if not values:
        return None
    est = st.aggregate([np.asarray(values)], settings.reps, settings.seed)
    return {"n": len(values), "mean": est["mean"].as_dict(), "iqm": est["iqm"].as_dict()}


def measure_of(runs: Sequence[Run]) -> str:
    return "normalized_score" if all(r.scored for r in runs) else "return_mean"


def configurations(groups: dict[tuple, list[Run]], labels: Mapping[tuple, str], data: Mapping[str, Dataset],
                   settings: Settings) -> list[dict[str, Any]]:
    """One row per configuration: seeds, measure, mean and IQM, premise means, unfinished runs, reference."""
    rows = []
    for config, runs in groups.items():
        runs = sorted(runs, key=lambda r: r.seed)
        measure = measure_of(runs)
        values = [r.value(settings.last, measure) for r in runs]
        premise = {k: float(np.mean(v)) for k in PREMISE
                   if (v := [r.final_premise[k] for r in runs
                             if r.final_premise and r.final_premise.get(k) is not None])}
        lengths = sorted({len(r.evaluations) for r in runs})
        rows.append({"configuration": labels[config], "task": config[0], "dataset": data[config[1]].names[0],
                     "data": data[config[1]].label, "data_key": config[1], "method": method_label(config[2]),
                     "named_method": runs[0].method_name is not None, "grid": cl.grid_key(config, data),
                     "rollout_length": runs[0].rollout_length,
                     "penalty_coef": runs[0].penalty_coef, "penalty_kind": runs[0].penalty_kind,
                     "seeds": [r.seed for r in runs], "measure": measure, "values": values,
                     "statistics": interval_stats(values, settings), "premise": premise or None,
                     "unfinished": [str(r.path.parent) for r in runs if not r.finished],
                     "evaluations_per_seed": lengths if len(lengths) > 1 else None,
                     "score_reference": sorted({str(r.score_reference) for r in runs}),
                     "runs": [str(r.path.parent) for r in runs]})
    return rows


def method_columns(runs: list[Run], data: Mapping[str, Dataset],
                   settings: Settings) -> dict[tuple, dict[str, np.ndarray]]:
    """Per method: {task and dataset label: its runs' normalised scores}, every scored task the method ran.
    Keyed by ``Run.config``'s parts: the dataset's label names its content (``cells.datasets``)."""
    columns: dict[tuple, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    for run in sorted(runs, key=lambda r: r.seed):
        if run.scored and (value := run.value(settings.last, "normalized_score")) is not None:
            task, key, method = run.config
            columns[method][f"{task} {data[key].label}"].append(value)
    return {m: {t: np.asarray(v) for t, v in sorted(tasks.items())} for m, tasks in columns.items()}


def aggregates(runs: list[Run], data: Mapping[str, Dataset],
               settings: Settings) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Across tasks: per method IQM and mean; P(X > Y) for every ordered pair of methods on their common tasks."""
    columns = method_columns(runs, data, settings)
    names = cl.unique({m: method_label(m) for m in columns}, "methods")
    rows = []
    for method, tasks in columns.items():
        est = st.aggregate(list(tasks.values()), settings.reps, settings.seed)
        rows.append({"method": names[method], "tasks": list(tasks), "runs": {t: len(v) for t, v in tasks.items()},
                     "n": sum(len(v) for v in tasks.values()), "iqm": est["iqm"].as_dict(),
                     "mean": est["mean"].as_dict()})
    pairs = []
    for (mx, tx), (my, ty) in itertools.permutations(columns.items(), 2):
        common = sorted(set(tx) & set(ty))
        if common:
            poi = st.improvement([tx[t] for t in common], [ty[t] for t in common], settings.reps, settings.seed)
            pairs.append({"x": names[mx], "y": names[my], "tasks": common,
                          "n_x": sum(len(tx[t]) for t in common), "n_y": sum(len(ty[t]) for t in common),
                          **poi.as_dict()})
    return rows, pairs


def select(runs: list[Run], settings: Settings) -> tuple[list[Run], list[tuple[str, str]]]:
    """The runs the report uses, and (run, reason) for each one it leaves out."""
    kept, left_out = [], []
    for run in runs:
        reason = run.why_unfinished()
        if not run.evaluations:
            left_out.append((str(run.path.parent), reason or "no evaluation (e.g. fit --stage dynamics)"))
        elif reason and not settings.include_unfinished:
            left_out.append((str(run.path.parent), reason))
        else:
            kept.append(run)
    return kept, left_out


def attach_selection(rows: list[dict[str, Any]], selection: dict[str, Any]) -> None:
    """Each configuration's offline estimate from a ``select`` result: the mean over its runs' final policies of
    the estimate ``select`` chose by, with its n (rows whose runs ``select`` did not estimate get none)."""
    by = selection["config"]["choose_by"]
    finals = [row for row in selection["candidates"] if row.get("epoch") is None]
    estimates = {Path(row["run"]).resolve(): row["estimates"].get(by) for row in finals}
    chosen = {Path(row["run"]).resolve() for row in finals if row.get("chosen")}
    for row in rows:
        runs = [Path(run).resolve() for run in row["runs"]]
        values = [v for run in runs if (v := estimates.get(run)) is not None]
        row["offline_estimate"] = None if not values else {
            "estimator": by, "mean": float(np.mean(values)), "n": len(values), "chosen": any(r in chosen for r in runs)}


def read_selection(path: str | Path) -> dict[str, Any]:
    """A ``select.json`` (or the directory ``select --out`` wrote it into); one-line errors."""
    path = Path(path)
    path = path / "select.json" if path.is_dir() else path
    try:
        selection = json.loads(path.read_text())
        if not isinstance(selection["config"]["choose_by"], str) or not isinstance(selection["candidates"], list):
            raise TypeError("choose_by or candidates of the wrong type")
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise DatasetError(f"--selection {path}: not a select.json ({type(err).__name__}: {err})") from None
    return selection


def gather(paths: Sequence[str | Path], settings: Settings = Settings()) -> tuple[list[Run], list[tuple[str, str]]]:
    """The runs under ``paths`` the report (and ``select``) use: those ``select`` keeps, each configuration and
    seed once (the newest), with their methods; and every run left out, with its reason."""
    found, missing = find_runs(list(paths))
    runs, left_out = select([load_run(p) for p in found], settings)
    runs, dropped = deduplicate(assign_methods(runs))
    left_out += missing + [(str(r.path.parent), "repeats the configuration and seed of a newer run") for r in dropped]
    return runs, left_out


def build_report(paths: Sequence[str | Path], settings: Settings = Settings()) -> tuple[dict[str, Any], list]:
    """The report as a JSON-ready dict, and the runs it used (for figures)."""
    runs, left_out = gather(paths, settings)
    data = cl.datasets(runs)
    groups: dict[tuple, list[Run]] = defaultdict(list)
    for run in runs:
        groups[run.config].append(run)
    labels = cl.unique({c: cl.config_label(c, data) for c in groups}, "configurations")
    groups = dict(sorted(groups.items(), key=lambda kv: json.dumps((kv[0][0], data[kv[0][1]].label, kv[0][2]))))
    rows = configurations(groups, labels, data, settings)
    if settings.selection is not None:
        attach_selection(rows, read_selection(settings.selection))
    aggregate, poi = aggregates(runs, data, settings)
    selection = "final evaluation" if settings.last == 1 else f"mean of the last {settings.last} evaluations"
    report = {
        "settings": {"score": selection, "last": settings.last, "bootstrap_reps": settings.reps,
                     "bootstrap_seed": settings.seed, "confidence": st.CONFIDENCE, "min_runs": st.MIN_RUNS,
                     "include_unfinished": settings.include_unfinished, "interval": MEANING},
        "score_references": sorted({str(r.score_reference) for r in runs}),
        "code_versions": code_versions(runs),
        "datasets": [d.as_dict(sum(r.data_key == k for r in runs)) for k, d in data.items()],
        "dataset_notes": cl.notes(data),
        "left_out": [{"run": run, "reason": reason} for run, reason in left_out],
        "configurations": rows, "aggregates": aggregate, "probability_of_improvement": poi,
        "table1": table1(rows, data),
        "ood": ood_table(groups, labels, lambda values: interval_stats(values, settings), settings.last),
        "premise_kinds": premise_kinds({labels[c]: [r.final_premise for r in rs] for c, rs in groups.items()})}
    return report, runs


def figure_data(runs: list[Run], report: dict[str, Any]) -> list[dict[str, Any]]:
    """Plain data per configuration for ``analysis.figures.study_figures``: panel, h, lambda, curves, IQM."""
    by_run = {str(r.path.parent): r for r in runs}
    out = []
    for row in report["configurations"]:
        members = [by_run[p] for p in row["runs"]]
        out.append({"label": f"{row['method']} (n={len(row['runs'])})", "measure": row["measure"],
                    "panel": f"{row['task']} {row['data']}", "grid_key": row["grid"],
                    # h x lambda heat maps are for grids of unnamed methods; a named arm is one method
                    "h": None if row["grid"] is None else row["rollout_length"],
                    "lambda": row["penalty_coef"], "statistics": row["statistics"],
                    "curves": [[(e["sac_updates"], e.get(row["measure"])) for e in r.evaluations] for r in members]})
    return out


def make_report(paths: Sequence[str | Path], settings: Settings, out: str | Path | None = None) -> dict[str, Any]:
    """The report of ``paths`` (``build_report``), its warnings (code versions, runs left out) printed on stderr;
    with ``out``, also written there: report.md, report.json and the figures (PNG). Refuses in one line
    (``DatasetError``) what ``build_report`` refuses."""
    from mopo_lightning.analysis.figures import calibration, study_figures
    from mopo_lightning.analysis.tables import markdown

    try:
        report, used = build_report(paths, settings)
    except ValueError as err:
        raise DatasetError(str(err)) from None
    if line := warning(report["code_versions"]):
        print(line, file=sys.stderr)
    if report["left_out"]:
        print(f"warning: {len(report['left_out'])} run(s) left out: "
              + "; ".join(f"{r['run']}: {r['reason']}" for r in report["left_out"]), file=sys.stderr)
    if out is not None:
        from mopo_lightning.files import write_text_atomic

        Path(out).mkdir(parents=True, exist_ok=True)
        figures = (*study_figures(figure_data(used, report), Path(out), settings.reps, settings.seed),
                   calibration(report["premise_kinds"], Path(out)))  # None when no run measured the kinds
        report["figures"] = [str(p) for p in figures if p is not None]
        write_text_atomic(Path(out) / "report.json", json.dumps(report, indent=1) + "\n")
        write_text_atomic(Path(out) / "report.md", markdown(report) + "\n")
    return report
