"""``mopo-lightning report RUN_OR_SWEEP_DIR...``: the paper's tables with honest statistics, and figures.

Sources: MOPO (Yu et al. 2020, arXiv 2005.13239) Table 1 (D4RL normalised scores, dataset x env, MOPO beside
MBPO) and Table 2 (OOD tasks: the dataset's mean and best episode return under the test task's reward, beside
MOPO's and MBPO's returns); statistics as Agarwal et al. 2021 recommend (``analysis/statistics.py``).

- Runs, their status and their method: ``analysis/runs.py``. Finished runs only, unless
  ``--include_unfinished``; every run left out is named with its reason.
- A configuration is (task, dataset, method); two runs of one configuration with the same seed are one seed:
  the newest ``results.json`` is kept and the others are named.
- Score of a run: its final evaluation (default) or the mean of its last K evaluations (``--last K``); the
  D4RL normalised score where the run has one (``score_reference`` D4RL or minari:<id>), else the return.
- Across tasks: each method pools every task it ran, on the runs each task has.
- lambda = 0 without a named method is MBPO; the OOD table's MBPO column is the lambda-0 runs with the same h.
- Batch statistics come from the dataset file that ``results.json`` names, read in file order and cut at
  ``terminals | timeouts``; a trailing episode cut by the end of the file is left out.
"""

from __future__ import annotations

import itertools
import json
import sys
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from mopo_lightning.analysis import statistics as st
from mopo_lightning.analysis.premise_kinds import premise_kinds
from mopo_lightning.analysis.runs import Run, assign_methods, deduplicate, find_runs, load_run, method_label
from mopo_lightning.data import summary
from mopo_lightning.data.d4rl import episode_ends, relabel_rewards
from mopo_lightning.data.d4rl_download import resolve_dataset
from mopo_lightning.data.errors import DatasetError
from mopo_lightning.tasks import get_task

D4RL_ROWS = {"random": "random", "medium": "medium", "medium-replay": "mixed", "medium-expert": "medium-expert"}
"""D4RL dataset kinds and the paper's row names ("mixed" is D4RL's medium-replay)."""
PAPER_MOPO = {("random", "halfcheetah"): 35.4, ("random", "hopper"): 11.7, ("random", "walker2d"): 13.6,
              ("medium", "halfcheetah"): 42.3, ("medium", "hopper"): 28.0, ("medium", "walker2d"): 17.8,
              ("mixed", "halfcheetah"): 53.1, ("mixed", "hopper"): 67.5, ("mixed", "walker2d"): 39.0,
              ("medium-expert", "halfcheetah"): 63.3, ("medium-expert", "hopper"): 23.7,
              ("medium-expert", "walker2d"): 44.6}
"""MOPO's Table 1 (D4RL v0, mean of 6 seeds), beside D4RL-named datasets for reference."""
PREMISE = ("spearman", "violation_rate", "return_gap")
MEANING = (f"An interval is a 95% percentile interval of the stratified bootstrap over runs (rliable) when at "
           f"least {st.MIN_RUNS} runs enter it; with fewer, the range [min, max] of the runs is shown instead, "
           f"marked 'range', because a bootstrap over so few runs covers far less than 95%. n counts runs "
           f"(seeds). P(X > Y) from fewer than {st.MIN_RUNS} runs a side has no interval.")


@dataclass(frozen=True)
class Settings:
    """How runs are chosen, scores taken and intervals computed."""

    last: int = 1
    reps: int = st.REPS
    seed: int = st.SEED
    include_unfinished: bool = False


def interval_stats(values: Sequence[float | None], settings: Settings) -> dict[str, Any] | None:
    """n, mean and IQM with their intervals of one configuration's per-seed values (None when empty)."""
    values = [v for v in values if v is not None]
    if not values:
        return None
    est = st.aggregate([np.asarray(values)], settings.reps, settings.seed)
    return {"n": len(values), "mean": est["mean"].as_dict(), "iqm": est["iqm"].as_dict()}


def measure_of(runs: Sequence[Run]) -> str:
    return "normalized_score" if all(r.scored for r in runs) else "return_mean"


def configurations(groups: dict[tuple, list[Run]], settings: Settings) -> list[dict[str, Any]]:
    """One row per configuration: seeds, measure, mean and IQM, premise means, unfinished runs, reference."""
    rows = []
    for config, runs in groups.items():
        runs = sorted(runs, key=lambda r: r.seed)
        measure = measure_of(runs)
        values = [r.value(settings.last, measure) for r in runs]
        premise = {k: float(np.mean(v)) for k in PREMISE
                   if (v := [r.final_premise[k] for r in runs if r.final_premise and r.final_premise.get(k) is not None])}
        lengths = sorted({len(r.evaluations) for r in runs})
        rows.append({"configuration": label(config), "task": config[0], "dataset": config[1],
                     "method": method_label(config[2]), "named_method": runs[0].method_name is not None,
                     "rollout_length": runs[0].rollout_length,
                     "penalty_coef": runs[0].penalty_coef, "penalty_kind": runs[0].penalty_kind,
                     "seeds": [r.seed for r in runs], "measure": measure, "values": values,
                     "statistics": interval_stats(values, settings), "premise": premise or None,
                     "unfinished": [str(r.path.parent) for r in runs if not r.finished],
                     "evaluations_per_seed": lengths if len(lengths) > 1 else None,
                     "score_reference": sorted({str(r.score_reference) for r in runs}),
                     "runs": [str(r.path.parent) for r in runs]})
    return rows


def label(config: tuple) -> str:
    """``hopper hopper-medium-replay-v2 MOPO``; the dataset as a file stem when it is a path."""
    task, dataset, method = config
    return f"{task} {dataset_name(dataset)} {method_label(method)}"


def dataset_name(dataset: str) -> str:
    return Path(dataset).stem if dataset.endswith((".hdf5", ".h5")) else dataset


def method_columns(runs: list[Run], settings: Settings) -> dict[tuple, dict[str, np.ndarray]]:
    """Per method: {task and dataset: its runs' normalised scores}, every scored task the method ran."""
    cells: dict[tuple, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    for run in sorted(runs, key=lambda r: r.seed):
        if run.scored and (value := run.value(settings.last, "normalized_score")) is not None:
            cells[run.method][f"{get_task(run.task).name} {dataset_name(run.dataset)}"].append(value)
    return {m: {t: np.asarray(v) for t, v in sorted(tasks.items())} for m, tasks in cells.items()}


def aggregates(runs: list[Run], settings: Settings) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Across tasks: per method IQM and mean; P(X > Y) for every ordered pair of methods on their common tasks."""
    columns = method_columns(runs, settings)
    rows = []
    for method, tasks in columns.items():
        est = st.aggregate(list(tasks.values()), settings.reps, settings.seed)
        rows.append({"method": method_label(method), "tasks": list(tasks), "runs": {t: len(v) for t, v in tasks.items()},
                     "n": sum(len(v) for v in tasks.values()), "iqm": est["iqm"].as_dict(),
                     "mean": est["mean"].as_dict()})
    pairs = []
    for (mx, tx), (my, ty) in itertools.permutations(columns.items(), 2):
        common = sorted(set(tx) & set(ty))
        if common:
            poi = st.improvement([tx[t] for t in common], [ty[t] for t in common], settings.reps, settings.seed)
            pairs.append({"x": method_label(mx), "y": method_label(my), "tasks": common,
                          "n_x": sum(len(tx[t]) for t in common), "n_y": sum(len(ty[t]) for t in common),
                          **poi.as_dict()})
    return rows, pairs


def d4rl_kind(dataset: str) -> str:
    """The paper's row name of a dataset: ``hopper-medium-replay-v2`` -> ``mixed``; ``hopper-rnd.hdf5`` -> ``rnd``."""
    parts = dataset_name(dataset).lower().replace("_", "-").split("-")
    core = "-".join(p for p in parts[1:] if not (p.startswith("v") and p[1:].isdigit()))
    return D4RL_ROWS.get(core, core or parts[0])


def table1(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Table 1: one row per (dataset kind, env) with each method's statistics, and the paper's MOPO score."""
    cells: dict[tuple[str, str], dict[str, Any]] = defaultdict(dict)
    files: set[tuple[str, str]] = set()  # rows holding a file of our own: the paper's number is not theirs
    for row in rows:
        if row["measure"] == "normalized_score" and get_task(row["task"]).has_reference_scores:
            key = (d4rl_kind(row["dataset"]), row["task"])
            cells[key][row["method"]] = row["statistics"]
            if row["dataset"].endswith((".hdf5", ".h5")):
                files.add(key)
    order = {k: i for i, k in enumerate(D4RL_ROWS.values())}
    return [{"dataset": kind, "env": env, "methods": methods,
             "paper_mopo": None if (kind, env) in files else PAPER_MOPO.get((kind, env))}
            for (kind, env), methods in sorted(cells.items(), key=lambda kv: (order.get(kv[0][0], 99), kv[0]))]


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
    ends, raw = episode_ends(path, optional=spec.relabel.keys if spec.relabel is not None else ())
    rewards = relabel_rewards(Path(path), raw, spec) if spec.relabel is not None else raw["rewards"]
    returns, _, partial = summary.episode_returns(np.asarray(rewards, dtype=np.float64).reshape(-1), ends)
    return returns[:-1] if partial else returns  # complete episodes only


def ood_table(groups: dict[tuple, list[Run]], settings: Settings) -> list[dict[str, Any]]:
    """Table 2 rows, one per variant-task configuration with lambda > 0: batch mean/max, MOPO and MBPO returns."""
    rows = []
    for (task, dataset, method), runs in groups.items():
        run = runs[0]
        if get_task(task).has_reference_scores or run.penalty_coef == 0:
            continue
        path = dataset_file(run)
        returns = episode_returns(path, task) if path is not None else np.zeros(0)
        mbpo = [r for (t, d, _), rs in groups.items() if (t, d) == (task, dataset) for r in rs
                if r.penalty_coef == 0 and r.rollout_length == run.rollout_length]
        rows.append({"task": task, "dataset": dataset, "method": method_label(method),
                     "rollout_length": run.rollout_length, "penalty_coef": run.penalty_coef,
                     "episodes": int(returns.size),
                     "batch_mean": float(returns.mean()) if returns.size else None,
                     "batch_max": float(returns.max()) if returns.size else None,
                     "mopo": interval_stats([r.value(settings.last, "return_mean") for r in runs], settings),
                     "mbpo": interval_stats([r.value(settings.last, "return_mean") for r in mbpo], settings)})
    return sorted(rows, key=lambda r: (r["task"], r["dataset"], r["rollout_length"] or 0, r["penalty_coef"] or 0))


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


def build_report(paths: Sequence[str | Path], settings: Settings = Settings()) -> tuple[dict[str, Any], list]:
    """The report as a JSON-ready dict, and the runs it used (for figures)."""
    found, missing = find_runs(list(paths))
    runs, left_out = select([load_run(p) for p in found], settings)
    runs, dropped = deduplicate(assign_methods(runs))
    left_out += missing + [(str(r.path.parent), "repeats the configuration and seed of a newer run") for r in dropped]
    groups: dict[tuple, list[Run]] = defaultdict(list)
    for run in runs:
        groups[run.config].append(run)
    groups = dict(sorted(groups.items(), key=lambda kv: json.dumps(kv[0], default=str)))
    rows = configurations(groups, settings)
    aggregate, poi = aggregates(runs, settings)
    selection = "final evaluation" if settings.last == 1 else f"mean of the last {settings.last} evaluations"
    report = {
        "settings": {"score": selection, "last": settings.last, "bootstrap_reps": settings.reps,
                     "bootstrap_seed": settings.seed, "confidence": st.CONFIDENCE, "min_runs": st.MIN_RUNS,
                     "include_unfinished": settings.include_unfinished, "interval": MEANING},
        "score_references": sorted({str(r.score_reference) for r in runs}),
        "left_out": [{"run": run, "reason": reason} for run, reason in left_out],
        "configurations": rows, "aggregates": aggregate, "probability_of_improvement": poi,
        "table1": table1(rows), "ood": ood_table(groups, settings),
        "premise_kinds": premise_kinds({label(c): [r.final_premise for r in rs] for c, rs in groups.items()})}
    return report, runs


def figure_data(runs: list[Run], report: dict[str, Any]) -> list[dict[str, Any]]:
    """Plain data per configuration for ``analysis.figures.study_figures``: panel, h, lambda, curves, IQM."""
    by_run = {str(r.path.parent): r for r in runs}
    out = []
    for row in report["configurations"]:
        members = [by_run[p] for p in row["runs"]]
        out.append({"label": f"{row['method']} (n={len(row['runs'])})", "measure": row["measure"],
                    "panel": f"{row['task']} {dataset_name(row['dataset'])}",
                    "grid_key": f"{row['task']} {dataset_name(row['dataset'])} {row['penalty_kind'] or ''}".strip(),
                    # h x lambda heat maps are for grids of unnamed methods; a named arm is one method
                    "h": None if row["named_method"] else row["rollout_length"],
                    "lambda": row["penalty_coef"], "statistics": row["statistics"],
                    "curves": [[(e["sac_updates"], e.get(row["measure"])) for e in r.evaluations] for r in members]})
    return out


def main(runs: list[str], json: bool = False, out: str | None = None, last: int = 1, reps: int = st.REPS,
         seed: int = st.SEED, include_unfinished: bool = False) -> None:
    """The paper's Table 1 (methods side by side), per-configuration and across-task statistics, figures.

    Args:
        runs: run directories (or their results.json files), or directories holding runs (a sweep directory).
        json: print the report as JSON instead of Markdown.
        out: also write report.md, report.json and the figures (PNG) into this directory.
        last: a run's score is the mean of its last K evaluations (1: the final evaluation, the paper's choice).
        reps: bootstrap replications of every interval.
        seed: seed of the bootstrap's random state (a report is reproducible).
        include_unfinished: also use runs that did not finish (running, failed, stopped), marked as such.
    """
    from json import dumps

    from mopo_lightning.analysis.figures import calibration, study_figures
    from mopo_lightning.analysis.tables import markdown

    if last < 1 or reps < 1:
        raise ValueError("--last and --reps must be >= 1")
    try:
        report, used = build_report(runs, Settings(last, reps, seed, include_unfinished))
    except ValueError as err:
        raise DatasetError(str(err)) from None
    if report["left_out"]:
        print(f"warning: {len(report['left_out'])} run(s) left out: "
              + "; ".join(f"{r['run']}: {r['reason']}" for r in report["left_out"]), file=sys.stderr)
    if out is not None:
        from mopo_lightning.files import write_text_atomic

        Path(out).mkdir(parents=True, exist_ok=True)
        figures = (*study_figures(figure_data(used, report), Path(out), reps, seed),
                   calibration(report["premise_kinds"], Path(out)))  # None when no run measured the kinds
        report["figures"] = [str(p) for p in figures if p is not None]
        write_text_atomic(Path(out) / "report.json", dumps(report, indent=1) + "\n")
        write_text_atomic(Path(out) / "report.md", markdown(report) + "\n")
    print(dumps(report, indent=1) if json else markdown(report))
