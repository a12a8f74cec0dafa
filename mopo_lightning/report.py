"""``mopo-lightning report RUN_DIR...``: the paper's result tables from runs' ``results.json``.

Source: MOPO (Yu et al. 2020, arXiv 2005.13239), Table 1 (D4RL: normalised score per dataset x env,
mean and std over seeds) and Table 2 (out-of-distribution tasks: batch mean and batch max, the mean
and best episode return of the dataset under the test task's reward, beside MOPO's and MBPO's returns).

A run's score and return are those of its last evaluation (``final_normalized_score``; ``final_return``
when present, else the last evaluation's ``return_mean``). A run with ``penalty_coef`` 0 is MBPO
(lambda = 0 turns MOPO into MBPO); runs without the field count as MOPO. Std is over seeds (ddof 0).
An OOD row is one configuration (task, dataset, h, MOPO's lambda), its MBPO column the runs with the
same h and lambda 0; a D4RL cell pools every MOPO (or MBPO) run of its task and dataset.
Batch statistics come from the dataset file that ``results.json`` names, read in file order and cut at
``terminals | timeouts``; a trailing episode cut by the end of the file is left out.
"""

from __future__ import annotations

import json
import math
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from mopo_lightning.data.d4rl import DatasetError, episode_ends, read_arrays, relabel_rewards, resolve_dataset
from mopo_lightning.tasks import get_task

D4RL_ROWS = {"random": "random", "medium": "medium", "medium-replay": "mixed", "medium-expert": "medium-expert"}
"""D4RL dataset kinds and the paper's row names ("mixed" is D4RL's medium-replay)."""


@dataclass
class Run:
    """The fields of one ``results.json`` that the tables use."""

    path: Path
    task: str
    dataset: str
    seed: int
    penalty_coef: float | None
    rollout_length: int | None
    final_return: float | None
    final_score: float | None

    @property
    def algo(self) -> str:
        return "MBPO" if self.penalty_coef == 0 else "MOPO"


def load_run(path: str | Path) -> Run:
    """Read ``RUN_DIR/results.json`` (or a results.json path)."""
    path = Path(path)
    if path.is_dir():
        path = path / "results.json"
    try:
        data = json.loads(path.read_text())
        data["task"], data["dataset"]
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise ValueError(f"{path}: not a run's results.json ({type(err).__name__}: {err})") from None
    evals = data.get("evaluations") or []
    final_return = data.get("final_return", evals[-1]["return_mean"] if evals else None)
    score = data.get("final_normalized_score")
    return Run(path, data["task"], str(data["dataset"]), int(data.get("seed", 0)), data.get("penalty_coef"),
               data.get("rollout_length"), final_return, None if score is None or not math.isfinite(score) else float(score))


def stats(values: Sequence[float]) -> dict[str, float] | None:
    """Mean, std (ddof 0) and count, or None when there are no values."""
    values = [v for v in values if v is not None]
    if not values:
        return None
    return {"mean": float(np.mean(values)), "std": float(np.std(values)), "n": len(values)}


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


# ---------------------------------------------------------------- the two tables


def ood_table(runs: Sequence[Run]) -> list[dict[str, Any]]:
    """Table 2 rows, one per (variant task, dataset, h, MOPO lambda): batch mean/max, MOPO and MBPO returns."""
    groups: dict[tuple[str, str, int], list[Run]] = defaultdict(list)
    for run in runs:
        if not get_task(run.task).has_reference_scores:
            groups[(get_task(run.task).name, run.dataset, run.rollout_length or 0)].append(run)
    rows = []
    for (task, dataset, h), members in sorted(groups.items()):
        path = dataset_file(members[0])
        returns = episode_returns(path, task) if path is not None else np.zeros(0)
        mbpo = stats([r.final_return for r in members if r.algo == "MBPO"])
        lambdas = sorted({r.penalty_coef for r in members if r.algo == "MOPO"}, key=lambda v: (v is None, v or 0))
        for lam in lambdas or [None]:
            rows.append({
                "task": task,
                "dataset": dataset,
                "rollout_length": h or None,
                "penalty_coef": lam,
                "episodes": int(returns.size),
                "batch_mean": float(returns.mean()) if returns.size else None,
                "batch_max": float(returns.max()) if returns.size else None,
                "mopo": stats([r.final_return for r in members if r.algo == "MOPO" and r.penalty_coef == lam]),
                "mbpo": mbpo,
            })
    return rows


def d4rl_kind(dataset: str) -> str:
    """The paper's row name of a dataset: ``hopper-medium-replay-v2`` -> ``mixed``; files -> their stem."""
    name = Path(dataset).stem if dataset.endswith((".hdf5", ".h5")) else dataset
    parts = name.lower().replace("_", "-").split("-")
    core = "-".join(p for p in parts[1:] if not (p.startswith("v") and p[1:].isdigit()))
    return D4RL_ROWS.get(core, name)


def d4rl_table(runs: Sequence[Run]) -> dict[str, dict[str, dict[str, dict[str, float] | None]]]:
    """Table 1: {algo: {row: {env: stats of the normalised score}}} for tasks with D4RL references."""
    cells: dict[str, dict[str, dict[str, list]]] = defaultdict(lambda: defaultdict(lambda: defaultdict(list)))
    for run in runs:
        task = get_task(run.task)
        if task.has_reference_scores:
            cells[run.algo][d4rl_kind(run.dataset)][task.name].append(run.final_score)
    return {algo: {row: {env: stats(v) for env, v in envs.items()} for row, envs in rows.items()}
            for algo, rows in cells.items()}


# ---------------------------------------------------------------- text


def _cell(s: dict[str, float] | None, digits: int = 1) -> str:
    if s is None:
        return "-"
    text = f"{s['mean']:.{digits}f}"
    return text + (f" ± {s['std']:.{digits}f} (n={s['n']})" if s["n"] > 1 else "")


def _num(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


def _table(header: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    line = lambda r: "  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths)))
    return "\n".join([line(header), "  ".join("-" * w for w in widths), *map(line, rows)])


def format_report(runs: Sequence[Run]) -> str:
    """Both tables as text (a table with no runs is left out)."""
    parts = []
    ood = ood_table(runs)
    if ood:
        rows = [[r["task"], Path(r["dataset"]).name, str(r["rollout_length"] or "-"),
                 "-" if r["penalty_coef"] is None else f"{r['penalty_coef']:g}", _num(r["batch_mean"]),
                 _num(r["batch_max"]), _cell(r["mopo"]), _cell(r["mbpo"])] for r in ood]
        header = ["environment", "dataset", "h", "lambda", "batch mean", "batch max", "MOPO", "MBPO (lambda 0)"]
        parts.append("Out-of-distribution tasks (average return; paper Table 2)\n" + _table(header, rows))
    for algo, table in sorted(d4rl_table(runs).items(), key=lambda kv: kv[0] != "MOPO"):
        envs = sorted({env for row in table.values() for env in row})
        order = [k for k in D4RL_ROWS.values() if k in table] + sorted(k for k in table if k not in D4RL_ROWS.values())
        rows = [[row, *(_cell(table[row].get(env)) for env in envs)] for row in order]
        parts.append(f"{algo} on D4RL (normalised score, mean ± std over seeds; paper Table 1)\n"
                     + _table(["dataset", *envs], rows))
    return "\n\n".join(parts) if parts else "no runs with evaluations"


def main(runs: list[str], json: bool = False) -> None:
    """Print the paper's tables (OOD returns, D4RL scores) from runs' ``results.json``.

    Args:
        runs: run directories (or their results.json files).
        json: print the tables as JSON.
    """
    from json import dumps

    try:
        loaded = [load_run(p) for p in runs]
    except ValueError as err:
        raise DatasetError(str(err)) from None
    if json:
        print(dumps({"ood": ood_table(loaded), "d4rl": d4rl_table(loaded)}, indent=2))
    else:
        print(format_report(loaded))
